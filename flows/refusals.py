"""An expected refusal is logged as our sentence, never as a Python traceback.

Tasks raise `DigestError`s (a recalled week, a refused refreeze, another run holding the week),
so that the step is Failed in the UI with its sentence. Prefect logs every exception of a task
or a flow run with its traceback, and the engine adds "Engine execution exited with unexpected
exception" with the same traceback again: forty lines in the worker's log for what is one
sentence for ops. The filter here keeps the sentence and drops the traceback for a `DigestError`,
and drops the engine's own repetition (the flow has logged the sentence already). Every other
exception keeps its traceback: it is a bug, and the traceback is what finds it.
"""

from __future__ import annotations

import logging

from digest.errors import DigestError

# Prefect's loggers for task runs, flow runs, and the engine that runs a deployment's flow run.
_LOGGERS = ("prefect.task_runs", "prefect.flow_runs", "prefect.engine")
# How the engine words its repetition of a flow run's exception ("Engine execution exited with
# unexpected exception", "Execution of flow run ... exited with unexpected exception").
_REPETITION = "unexpected exception"


class RefusalFilter(logging.Filter):
    """A refusal's record: its sentence alone; the engine's repetition of it: dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        refusal = record.exc_info[1] if record.exc_info else None
        if not isinstance(refusal, DigestError):
            return True
        if _REPETITION in record.getMessage():
            return False
        record.msg, record.args = "Refused: %s", (str(refusal),)
        record.exc_info, record.exc_text = None, None
        return True


def quiet_refusals() -> None:
    """Install the filter once per process (the flow calls this as it starts)."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(each, RefusalFilter) for each in logger.filters):
            logger.addFilter(RefusalFilter())
