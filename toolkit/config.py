"""One typed settings object, resolved in a written order.

    flag  >  TK_* environment variable  >  tk.yaml in the project directory  >  default

``Settings.resolve()`` is the only place that reads the environment or tk.yaml; every value
remembers where it came from (``Settings.source(name)``) so ``tk config show`` can tell.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.errors import ConfigError
from toolkit.units import parse_size

CONFIG_FILE = "tk.yaml"


def _parse_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def _int_parser(lo: int, hi: int) -> Callable[[Any, str], int]:
    def parse(value: Any, name: str) -> int:
        try:
            n = int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {value!r}") from None
        if not lo <= n <= hi:
            raise ConfigError(f"{name} must be between {lo} and {hi}, got {n}")
        return n

    return parse


def _float_parser(lo: float) -> Callable[[Any, str], float]:
    def parse(value: Any, name: str) -> float:
        try:
            x = float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if x < lo:
            raise ConfigError(f"{name} must be at least {lo}, got {x}")
        return x

    return parse


def _parse_str(value: Any, name: str) -> str:
    return str(value)


def _parse_path(value: Any, name: str) -> Path:
    return Path(str(value)).expanduser()


def _parse_size(value: Any, name: str) -> int:
    return parse_size(value, what=name)


def _opt(parse: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def parse_optional(value: Any, name: str) -> Any:
        if value is None or str(value).strip() == "":
            return None
        return parse(value, name)

    return parse_optional


@dataclass(frozen=True)
class Spec:
    """How one setting is read: its tk.yaml key, env var, parser and whether it is a secret."""

    name: str
    yaml_key: str | None
    parse: Callable[[Any, str], Any]
    help: str
    secret: bool = False

    @property
    def env(self) -> str:
        return "TK_" + self.name.upper()


SPECS: tuple[Spec, ...] = (
    Spec("project_dir", None, _parse_path, "directory holding tk.yaml, envs/, redis-conf/"),
    Spec("state_dir", "state_dir", _parse_path, "runtime state: data, logs, pids"),
    Spec("redis_url", "redis.url", _opt(_parse_str), "use this Redis instead", secret=True),
    Spec("redis_port", "redis.port", _int_parser(0, 65535), "port the managed Redis listens on"),
    Spec("redis_server", "redis.server", _opt(_parse_path), "redis-server/valkey-server binary"),
    Spec("redis_conf_dir", "redis.conf_dir", _parse_path, "where redis.conf/users.acl go"),
    Spec("redis_maxmemory", "redis.maxmemory", _opt(_parse_size), "maxmemory (default: share)"),
    Spec("redis_policy", "redis.maxmemory_policy", _parse_str, "maxmemory-policy"),
    Spec("redis_durable", "redis.durable", _parse_bool, "appendfsync always"),
    Spec("redis_timeout", "redis.timeout", _float_parser(0.1), "seconds to wait for Redis"),
    Spec("env_spec", "env.spec", _parse_path, "environment spec (tk env)"),
    Spec("env_engine", "env.engine", _parse_str, "rattler, conda, mamba or micromamba"),
    Spec("envs_dir", "env.envs_dir", _opt(_parse_path), "where named envs go (default: conda's)"),
    Spec("conda_root", "env.conda_root", _opt(_parse_path), "conda installation (default: find)"),
    Spec("env_cache_dir", "env.cache_dir", _opt(_parse_path), "rattler package cache"),
    Spec(
        "serve_model",
        "serve.model",
        _parse_str,
        "model: efficientnet-lite0, torchvision:<arch>=<file>, torchscript:<file>",
    ),
    Spec("serve_device", "serve.device", _parse_str, "auto, cpu, cuda or cuda:N"),
    Spec(
        "serve_max_batch", "serve.max_batch", _int_parser(1, 256), "tasks a worker claims at once"
    ),
    Spec(
        "serve_forward_batch",
        "serve.forward_batch",
        _int_parser(0, 256),
        "images per forward pass (0: CPU measures, GPU max_batch)",
    ),
    Spec(
        "serve_decode_threads",
        "serve.decode_threads",
        _int_parser(0, 1024),
        "threads decoding images (0: GPU serve.threads, CPU 1)",
    ),
    Spec("serve_max_delay_ms", "serve.max_delay_ms", _int_parser(0, 10000), "wait to fill a batch"),
    Spec("serve_threads", "serve.threads", _opt(_int_parser(1, 1024)), "torch threads per worker"),
    Spec(
        "serve_workers",
        "serve.workers",
        _opt(_int_parser(1, 1024)),
        "workers `tk up` starts on this host (unset: one per GPU, else per core as memory allows)",
    ),
    Spec("serve_host", "serve.host", _parse_str, "address the API listens on"),
    Spec("serve_port", "serve.port", _int_parser(0, 65535), "port the API listens on"),
    Spec("serve_url", "serve.url", _opt(_parse_str), "API URL for tk submit"),
    Spec("serve_token_file", "serve.token_file", _opt(_parse_path), "API bearer token file"),
    Spec("serve_allow_paths", "serve.allow_paths", _opt(_parse_str), "dirs image_path may read"),
    Spec("serve_max_image_bytes", "serve.max_image_bytes", _parse_size, "largest image file"),
    Spec("serve_max_image_pixels", "serve.max_image_pixels", _int_parser(1, 10**10), "largest WxH"),
    Spec("queue_max_depth", "queue.max_depth", _int_parser(1, 10**9), "waiting tasks before 503"),
    Spec(
        "queue_visibility_ms", "queue.visibility_ms", _int_parser(100, 86_400_000), "reclaim after"
    ),
    Spec("queue_max_deliveries", "queue.max_deliveries", _int_parser(1, 1000), "then dead-letter"),
    Spec("queue_result_ttl", "queue.result_ttl", _int_parser(1, 10**8), "seconds results are kept"),
    Spec("serve_env", "serve.env", _opt(_parse_str), "conda env workers must run in (name/path)"),
    Spec("doctor_max_wait_s", "doctor.max_wait_s", _float_parser(0), "oldest waiting task: fail"),
    Spec("doctor_max_dead", "doctor.max_dead", _int_parser(0, 10**9), "dead letters: fail above"),
    Spec("doctor_min_disk", "doctor.min_disk", _parse_size, "free disk for the AOF: fail below"),
    Spec("doctor_timeout", "doctor.timeout", _float_parser(0.1), "seconds per check before fail"),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


def _defaults(project_dir: Path) -> dict[str, Any]:
    return {
        "project_dir": project_dir,
        "state_dir": project_dir / ".tk",
        "redis_url": None,
        "redis_port": 6379,
        "redis_server": None,
        "redis_conf_dir": project_dir / "redis-conf",
        "redis_maxmemory": None,
        "redis_policy": "noeviction",
        "redis_durable": False,
        "redis_timeout": 10.0,
        "env_spec": project_dir / "envs" / "inference.yml",
        "env_engine": "rattler",
        "envs_dir": None,
        "conda_root": None,
        "env_cache_dir": None,
        "serve_model": "efficientnet-lite0",
        "serve_device": "auto",
        "serve_max_batch": 8,
        "serve_forward_batch": 0,
        "serve_decode_threads": 0,
        "serve_max_delay_ms": 5,
        "serve_threads": None,
        "serve_workers": None,
        "serve_host": "127.0.0.1",
        "serve_port": 8000,
        "serve_url": None,
        "serve_token_file": None,
        "serve_allow_paths": None,
        "serve_max_image_bytes": 8 * 1024 * 1024,
        "serve_max_image_pixels": 40_000_000,
        "queue_max_depth": 1000,
        "queue_visibility_ms": 30_000,
        "queue_max_deliveries": 3,
        "queue_result_ttl": 3600,
        "serve_env": None,
        "doctor_max_wait_s": 300.0,
        "doctor_max_dead": 100,
        "doctor_min_disk": 1024**3,
        "doctor_timeout": 2.0,
    }


@dataclass(frozen=True)
class Settings:
    """Resolved settings. Build with ``Settings.resolve()``; values are typed and final."""

    project_dir: Path
    state_dir: Path
    redis_url: str | None
    redis_port: int
    redis_server: Path | None
    redis_conf_dir: Path
    redis_maxmemory: int | None
    redis_policy: str
    redis_durable: bool
    redis_timeout: float
    env_spec: Path
    env_engine: str
    envs_dir: Path | None
    conda_root: Path | None
    env_cache_dir: Path | None
    serve_model: str
    serve_device: str
    serve_max_batch: int
    serve_forward_batch: int
    serve_decode_threads: int
    serve_max_delay_ms: int
    serve_threads: int | None
    serve_workers: int | None
    serve_host: str
    serve_port: int
    serve_url: str | None
    serve_token_file: Path | None
    serve_allow_paths: str | None
    serve_max_image_bytes: int
    serve_max_image_pixels: int
    queue_max_depth: int
    queue_visibility_ms: int
    queue_max_deliveries: int
    queue_result_ttl: int
    serve_env: str | None
    doctor_max_wait_s: float
    doctor_max_dead: int
    doctor_min_disk: int
    doctor_timeout: float
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:  # secrets never show up in a repr
        parts = [f"{s.name}={self.display(s.name)}" for s in SPECS]
        return f"Settings({', '.join(parts)})"

    def source(self, name: str) -> str:
        return self.sources.get(name, "default")

    def display(self, name: str) -> str:
        """The value as shown to humans, secrets masked."""
        value = getattr(self, name)
        if value is None:
            return "-"
        if SPEC_BY_NAME[name].secret:
            from toolkit.redis.urls import mask_url

            return mask_url(str(value))
        return str(value)

    def json_value(self, name: str) -> Any:
        """The value for ``--json``: its type kept (a number, true/false, null), paths as
        strings, secrets masked."""
        value = getattr(self, name)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.display(name)

    # directories derived from state_dir
    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def redis_data_dir(self) -> Path:
        return self.state_dir / "redis"

    @classmethod
    def resolve(
        cls,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Settings:
        """Resolve every setting: flag > TK_* env var > tk.yaml > default."""
        flags = {k: v for k, v in (flags or {}).items() if v is not None}
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}

        # The project directory decides where tk.yaml is, so it is resolved first.
        if "project_dir" in flags:
            raw_dir, src = flags["project_dir"], "flag"
        elif environ.get("TK_PROJECT_DIR"):
            raw_dir, src = environ["TK_PROJECT_DIR"], "env TK_PROJECT_DIR"
        else:
            raw_dir, src = (cwd or Path.cwd()), "default (current directory)"
        project_dir = Path(raw_dir).expanduser().resolve()
        values["project_dir"], sources["project_dir"] = project_dir, src

        file_values = _read_yaml(project_dir / CONFIG_FILE)
        defaults = _defaults(project_dir)
        for spec in SPECS[1:]:
            if spec.name in flags:
                raw, src = flags[spec.name], "flag"
            elif spec.env in environ:
                raw, src = environ[spec.env], f"env {spec.env}"
            elif spec.yaml_key and spec.yaml_key in file_values:
                raw, src = file_values[spec.yaml_key], f"{CONFIG_FILE} {spec.yaml_key}"
            else:
                values[spec.name], sources[spec.name] = defaults[spec.name], "default"
                continue
            if src == "flag":
                label = spec.yaml_key or spec.name
            elif src.startswith("env"):
                label = spec.env
            else:
                label = f"{spec.yaml_key} in {project_dir / CONFIG_FILE}"
            value = spec.parse(raw, label)
            if isinstance(value, Path) and not value.is_absolute():
                value = project_dir / value
            values[spec.name], sources[spec.name] = value, src
        return cls(**values, sources=sources)

    def with_flags(self, **flags: Any) -> Settings:
        """A copy with some values set from flags (None means 'not given')."""
        given = {k: v for k, v in flags.items() if v is not None}
        sources = dict(self.sources)
        parsed: dict[str, Any] = {}
        for name, raw in given.items():
            spec = SPEC_BY_NAME[name]
            parsed[name] = raw if _already_typed(raw) else spec.parse(raw, spec.yaml_key or name)
            sources[name] = "flag"
        return dataclasses.replace(self, **parsed, sources=sources)


def _already_typed(value: Any) -> bool:
    return isinstance(value, (bool, int, float, Path))


def _read_yaml(path: Path) -> dict[str, Any]:
    """tk.yaml flattened to dotted keys (``redis: {port: 1}`` -> ``{"redis.port": 1}``)."""
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML", fix="fix the file's syntax") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"{path}: not a text file (UTF-8)",
            fix=f"tk.yaml holds settings as YAML text; fix or remove {path}",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(dotted + ".", value)
            else:
                flat[dotted] = value

    walk("", data)
    known = {s.yaml_key for s in SPECS if s.yaml_key}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise _unknown_setting(path, unknown[0], known)
    return flat


def _unknown_setting(path: Path, key: str, known: set[str]) -> ConfigError:
    """The error for a tk.yaml key tk does not know: a section given a plain value, a
    near miss (did you mean), or neither."""
    import difflib

    inside = sorted(k for k in known if k.startswith(key + "."))
    if inside:
        example = inside[0].split(".")[-1]
        return ConfigError(
            f"{path}: {key!r} is a section and must hold settings, e.g. {key}: {{{example}: ...}}",
            fix=f"settings under {key}: {', '.join(k.split('.', 1)[1] for k in inside)}",
        )
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ConfigError(
        f"{path}: unknown setting {key!r}",
        fix=f"{hint}`tk config show` lists every setting with its tk.yaml key",
    )
