"""The operations the state owner answers (`AccessState.call`): one name each, typed, so a
misspelt operation is an error where it is written, not an `unknown_operation` at run time."""

from __future__ import annotations

from enum import StrEnum


class Op(StrEnum):
    # what replicas call
    LOOKUP = "lookup"
    SYNC = "sync"
    RENEW = "renew"
    # the admin API
    CREATE = "create"
    LIST = "list"
    GET = "get"
    UPDATE = "update"
    REVOKE = "revoke"
    # console sessions
    SESSION_CREATE = "session_create"
    SESSION_CHECK = "session_check"
    SESSION_END = "session_end"
