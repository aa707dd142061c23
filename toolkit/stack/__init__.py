"""`tk up | down | status | logs`: plan the stack (pure), run and supervise it, record state."""
