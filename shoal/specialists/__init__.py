"""Who does the work: typed specialists, each with its own confidence signal."""

from shoal.errors import HeadError, SandboxUnavailableError
from shoal.specialists.base import Judgement, Result, Signal, Specialist
from shoal.specialists.classifier import Classification, Classifier, TextInput
from shoal.specialists.coder import Code, Coder, CodeResult, CodeTask
from shoal.specialists.extractor import Extractor
from shoal.specialists.heads import HeadInfo, TrainedHead
from shoal.specialists.sandbox import Sandbox, SandboxLimits, SandboxResult
from shoal.specialists.spans import SpanHead, SpanHeadInfo, TokenReader
from shoal.specialists.summarizer import Summarizer, Summary, SummaryInput

__all__ = [
    "Classification",
    "Classifier",
    "Code",
    "CodeResult",
    "CodeTask",
    "Coder",
    "Extractor",
    "HeadError",
    "HeadInfo",
    "Judgement",
    "Result",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailableError",
    "Signal",
    "SpanHead",
    "SpanHeadInfo",
    "Specialist",
    "Summarizer",
    "Summary",
    "SummaryInput",
    "TextInput",
    "TokenReader",
    "TrainedHead",
]
