"""Keys from Prefect Secret blocks, for the tasks that call paid endpoints (a remote teacher or judge)."""

import os


def secret_key(env: str, block: str | None) -> str | None:
    """A key from its Prefect Secret block when the environment variable is unset. The value goes to the library as
    an argument: never a task parameter, result, log line or artifact."""
    if os.environ.get(env) or not block:
        return None
    from prefect.blocks.system import Secret

    try:
        return str(Secret.load(block).get()) or None
    except Exception as err:  # noqa: BLE001 - report which block, never a value
        raise ValueError(f"could not load Prefect Secret block {block!r}: {type(err).__name__}") from None
