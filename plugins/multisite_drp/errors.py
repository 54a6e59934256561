"""The project's error bases: what a failure means for the task that meets it.

* :class:`InputError`: the input is wrong (a campaign file, a Param, a connection or its
  extra, refused credentials, a connection that is not defined). Retrying cannot help:
  the glue (``hooks.mixin.CampaignTaskMixin``) fails the task at once with
  ``AirflowFailException``, keeping the message, which names the file, Param or
  connection, the field and what was expected.
* :class:`TransientError`: a service is briefly out of reach (server down, timeout, lock
  busy). The glue leaves it to Airflow, which retries the task with exponential backoff.
* any other :class:`DRPError`: an ordinary failure, retried as the task's ``retries`` say.

Every error class of the project derives from one of these, and most also from the
built-in it has always been (``ValueError``, ``RuntimeError``, ``LookupError``), so code
that catches the built-in keeps working.

This module imports nothing of the project and no Airflow: every layer may use it. The
import contract (``[tool.importlinter]`` in pyproject.toml) keeps it at the bottom.
"""

from __future__ import annotations

__all__ = ["DRPError", "InputError", "TransientError"]


class DRPError(Exception):
    """Base of every error the project raises on purpose."""


class InputError(DRPError):
    """Bad input (campaign file, Param, connection, credentials): retrying cannot help."""


class TransientError(DRPError):
    """A service briefly out of reach (server down, timeout, lock busy): retry with backoff."""
