"""Reading redis.conf text the way redis-server does. Pure (``load`` only reads files).

A line is ``directive arg arg ...``; ``#`` starts a comment line; arguments may be quoted
with ``"..."`` (C escapes: ``\\n \\t \\xHH \\"`` ...) or ``'...'`` (only ``\\'``), as Redis's
``sdssplitargs`` does. Directive names are case-insensitive. ``include`` lines are followed
(relative paths from the including file's directory, glob patterns allowed) and their
directives are spliced in where the ``include`` stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import UsageError

_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "a": "\a"}
_HEX = "0123456789abcdefABCDEF"
MAX_INCLUDE_DEPTH = 8


class ConfSyntaxError(UsageError):
    """A line redis-server itself would refuse (unbalanced quotes)."""


@dataclass(frozen=True)
class Directive:
    name: str  # lowercase
    args: tuple[str, ...]
    line: int
    source: str  # the file it came from ("<text>" for parsed text)

    @property
    def value(self) -> str:
        """The arguments joined by one space: the form CONFIG GET reports."""
        return " ".join(self.args)


def _double_quoted(text: str, i: int) -> tuple[str, int]:
    """Parse a ``"..."`` argument whose opening quote is at ``i - 1``; return (arg, next)."""
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if (
            c == "\\"
            and i + 3 < n
            and text[i + 1] == "x"
            and all(ch in _HEX for ch in text[i + 2 : i + 4])
        ):
            out.append(chr(int(text[i + 2 : i + 4], 16)))
            i += 4
        elif c == "\\" and i + 1 < n:
            out.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        elif c == '"':
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ConfSyntaxError("unbalanced quotes")


def _single_quoted(text: str, i: int) -> tuple[str, int]:
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n and text[i + 1] == "'":
            out.append("'")
            i += 2
        elif c == "'":
            return "".join(out), i + 1
        else:
            out.append(c)
            i += 1
    raise ConfSyntaxError("unbalanced quotes")


def split_args(line: str) -> list[str]:
    """Split one line into arguments like Redis's ``sdssplitargs``.

    A quote opens a quoted part anywhere in an argument and its closing quote ends the
    argument. Raises ConfSyntaxError on unbalanced quotes or a closing quote not followed by
    a space.
    """
    args: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i].isspace():
            i += 1
        if i >= n:
            return args
        current: list[str] = []
        while i < n and not line[i].isspace():
            if line[i] in "\"'":
                parse = _double_quoted if line[i] == '"' else _single_quoted
                part, i = parse(line, i + 1)
                current.append(part)
                if i < n and not line[i].isspace():
                    raise ConfSyntaxError("closing quote must be followed by a space")
                break
            current.append(line[i])
            i += 1
        args.append("".join(current))


def parse_text(text: str, source: str = "<text>") -> list[Directive]:
    """Every directive in ``text`` in order; ``include`` lines are kept, not followed."""
    out: list[Directive] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            args = split_args(line)
        except ConfSyntaxError as exc:
            raise ConfSyntaxError(
                f"{source}:{number}: {exc.message}", fix="fix the quoting on that line"
            ) from None
        if args:
            out.append(Directive(args[0].lower(), tuple(args[1:]), number, source))
    return out


def read_text(path: Path) -> str:
    """The text of ``path``; UsageError with a one-line reason when it cannot be read."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a redis.conf") from None
    except PermissionError:
        raise UsageError(
            f"cannot read {path}: permission denied", fix="run as a user that can read it"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def _include_targets(base: Path, pattern: str) -> list[Path]:
    path = Path(pattern)
    if not path.is_absolute():
        path = base / path
    if any(ch in pattern for ch in "*?["):
        return sorted(p for p in path.parent.glob(path.name) if p.is_file())
    return [path] if path.is_file() else []


def load(
    path: Path,
    _depth: int = 0,
    _seen: frozenset[Path] = frozenset(),
    skipped: list[str] | None = None,
) -> list[Directive]:
    """Directives of the file at ``path`` with its includes spliced in (best effort).

    Raises UsageError when ``path`` itself cannot be read or has a syntax error; an include
    that is missing, unreadable, too deep or circular is skipped, and said in ``skipped``
    (one line each) when a list is given. A pattern that matches no file is not an error.
    """
    text = read_text(path)
    seen = _seen | {path.resolve()}
    out: list[Directive] = []
    for d in parse_text(text, str(path)):
        if d.name != "include" or not d.args:
            out.append(d)
            continue
        pattern = d.args[0]
        where = f"{path}:{d.line}" if d.line else str(path)
        if _depth >= MAX_INCLUDE_DEPTH:
            _note(skipped, f"{where}: include {pattern}: nested too deep, not read")
            continue
        targets = _include_targets(path.parent, pattern)
        if not targets and not any(ch in pattern for ch in "*?["):
            _note(skipped, f"{where}: include {pattern}: no such file")
        for target in targets:
            if target.resolve() in seen:
                _note(skipped, f"{where}: include {pattern}: includes itself, not read again")
                continue
            try:
                out += load(target, _depth + 1, seen, skipped)
            except UsageError as exc:
                _note(skipped, f"{where}: include {pattern}: {exc.message}")
    return out


def _note(skipped: list[str] | None, line: str) -> None:
    if skipped is not None:
        skipped.append(line)
