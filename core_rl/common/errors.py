"""The few error types the suite raises at its edges.

Every error a user can cause (a bad config, an unknown env id, an action space an algorithm cannot
handle, a malformed data file) is one of these, with a message that names the cause. The CLI turns
them into one line on stderr and a non-zero exit; nothing deeper than the edge raises a traceback.
"""

from __future__ import annotations


class DeepRLError(Exception):
    """Base class: a problem the user can fix, described in one sentence."""


class ConfigError(DeepRLError, ValueError):
    """A config field is unknown, of the wrong type, or out of range."""


class EnvError(DeepRLError, ValueError):
    """An env id is unknown, or an env cannot be built."""


class SpaceError(DeepRLError, TypeError):
    """An algorithm was given an observation or action space it cannot handle."""


class TrackingError(DeepRLError, RuntimeError):
    """The tracking store cannot be opened or written."""


class CheckpointError(DeepRLError, RuntimeError):
    """A checkpoint is missing, unreadable, or belongs to another algorithm."""


class RunInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run; ``exit_code`` is the shell's 128 + signal number (130, 143)."""

    def __init__(self, signum: int):
        import signal

        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        super().__init__(self.signal_name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class WorkerLost(RunInterrupted):
    """A remote worker died mid-run (its node or process was lost). The run stops like an interrupted
    one: it ends KILLED with a checkpoint of its last complete iteration, to resume from once the
    cluster has room for the workers again. ``exit_code`` is 75 (EX_TEMPFAIL: try again later)."""

    def __init__(self, message: str):
        import signal

        KeyboardInterrupt.__init__(self, message)
        self.signum = int(signal.SIGTERM)
        self.signal_name = message  # what the tracked run's one line says stopped it

    @property
    def exit_code(self) -> int:
        return 75
