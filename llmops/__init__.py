"""LLMOps records: what each request did and cost, where it is written, experiments and their
report. No HTTP; Ray only inside `GatewayMetrics` (imported when one is built)."""

from llmops._accounting import Accounting, Price, Sink
from llmops._batch import BatchWriter
from llmops._config import LedgerConfig, RequestLogConfig, ResponsesConfig, Strict
from llmops._dataset import export_dataset
from llmops._evals import (
    JUDGE_RUBRIC,
    METRICS,
    SCORERS,
    CandidateResult,
    QualityFile,
    interval95,
    judge_score,
    read_quality,
    summarise,
    write_quality,
)
from llmops._evals import as_dict as eval_as_dict
from llmops._evals import render_html as render_eval_html
from llmops._evals import render_table as render_eval_table
from llmops._experiments import (
    ArmConfig,
    Assignment,
    ExperimentConfig,
    Experiments,
    assign_arm,
    unit_hash,
)
from llmops._finetune import FinetuneConfig, answer_text, finetune, load_examples
from llmops._ledger import GROUPS, Ledger, LedgerReader, open_ledger
from llmops._ledger_schema import MIGRATIONS as LEDGER_MIGRATIONS
from llmops._metrics import GatewayMetrics
from llmops._monitors import (
    ALERT,
    REFUSALS,
    MonitorConfig,
    MonitorRun,
    MonitorsConfig,
    MonitorStore,
    answer_signals,
    judged,
)
from llmops._prototypes import PrototypeStore
from llmops._record import LEDGER_COLUMNS, RequestRecord, key_id, response_text
from llmops._redact import DEFAULT_REDACTIONS, Redactor
from llmops._report import build_report, render_html, render_table
from llmops._request_log import RequestLog, log_entry, open_request_log
from llmops._responses import ResponseStore
from llmops._shared import (
    LocalRecordsTransport,
    RecordsOp,
    RecordsOwner,
    RecordsTransport,
    RecordsUnavailable,
    SharedRecords,
)
from llmops._usage import parse_since

__all__ = [
    "ALERT",
    "DEFAULT_REDACTIONS",
    "GROUPS",
    "JUDGE_RUBRIC",
    "LEDGER_COLUMNS",
    "LEDGER_MIGRATIONS",
    "METRICS",
    "REFUSALS",
    "SCORERS",
    "Accounting",
    "ArmConfig",
    "Assignment",
    "BatchWriter",
    "CandidateResult",
    "ExperimentConfig",
    "Experiments",
    "FinetuneConfig",
    "GatewayMetrics",
    "Ledger",
    "LedgerConfig",
    "LedgerReader",
    "LocalRecordsTransport",
    "MonitorConfig",
    "MonitorRun",
    "MonitorStore",
    "MonitorsConfig",
    "Price",
    "PrototypeStore",
    "QualityFile",
    "RecordsOp",
    "RecordsOwner",
    "RecordsTransport",
    "RecordsUnavailable",
    "Redactor",
    "RequestLog",
    "RequestLogConfig",
    "RequestRecord",
    "ResponseStore",
    "ResponsesConfig",
    "SharedRecords",
    "Sink",
    "Strict",
    "answer_signals",
    "answer_text",
    "assign_arm",
    "build_report",
    "eval_as_dict",
    "export_dataset",
    "finetune",
    "interval95",
    "judge_score",
    "judged",
    "key_id",
    "load_examples",
    "log_entry",
    "open_ledger",
    "open_request_log",
    "parse_since",
    "read_quality",
    "render_eval_html",
    "render_eval_table",
    "render_html",
    "render_table",
    "response_text",
    "summarise",
    "unit_hash",
    "write_quality",
]
