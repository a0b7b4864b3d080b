"""Request and response schemas of the server (pydantic), with the server's input limits.

One module per resource; this package re-exports every model and limit, so
``from unlearn_core.server import schemas as S; S.MCQRequest`` works. Imports no torch: the
Streamlit UI and remote clients import these without the engine.
"""

from __future__ import annotations

from unlearn_core.server.schemas.attacks import (  # noqa: F401
    DEFAULT_ATTACKS,
    AttackResult,
    AttackRunList,
    AttackRunOut,
    AttackSpec,
)
from unlearn_core.server.schemas.common import (  # noqa: F401
    GATED_MODES,
    MAX_ABS_CLAMP,
    MAX_CORPORA,
    MAX_EVAL_TOKENS,
    MAX_FEATURES,
    MAX_INTERVENTIONS,
    MAX_JOB_CONFIGS,
    MAX_NEW_TOKENS,
    MAX_PAGE,
    MAX_SAVED_QUESTIONS,
    MAX_SAVED_TEXT,
    MAX_STATS_TOKENS,
    MAX_TEXT_CHARS,
    MAX_VALUES,
    MODES,
    SYNC_DEMO_SCAN,
    SYNC_DESCRIPTIONS,
    SYNC_EVAL_TOKENS,
    SYNC_KNOWN_QUESTIONS,
    SYNC_NEW_TOKENS,
    SYNC_STATS_TOKENS,
    ClampValue,
    ErrorResponse,
    FeatureId,
    GateOut,
    InterventionIn,
    InterventionOut,
    Interventions,
    InterventionsRequest,
    Limits,
    Mode,
    Name,
    Request,
    StaticMode,
    Text,
    Variant,
)
from unlearn_core.server.schemas.features import (  # noqa: F401
    ActivationsRequest,
    ActivationsResponse,
    CorpusFeature,
    DashboardRequest,
    DashboardResponse,
    Example,
    Examples,
    LogitEffects,
    QuantileBand,
    SearchHit,
    SearchRequest,
    SearchResponse,
    SelectedFeature,
    SelectRequest,
    SelectResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from unlearn_core.server.schemas.info import (  # noqa: F401
    CacheStats,
    HealthResponse,
    InfoResponse,
    LockLabelStats,
    LockStats,
    QuestionSetInfo,
)
from unlearn_core.server.schemas.jobs import (  # noqa: F401
    TARGET_RULE,
    JobCreated,
    JobDetail,
    JobList,
    JobResult,
    JobSpec,
    JobSummary,
    RayTask,
)
from unlearn_core.server.schemas.metrics import (  # noqa: F401
    CorpusRequest,
    GenerateRequest,
    GenerateResponse,
    LossAddedRequest,
    LossAddedResponse,
    Perplexity,
    PerplexityRequest,
    PerplexityResponse,
)
from unlearn_core.server.schemas.persist import PersistTrainRequest  # noqa: F401
from unlearn_core.server.schemas.questions import (  # noqa: F401
    QUESTION_SET_HELP,
    CurvePoint,
    InlineQuestion,
    MCQRequest,
    MCQResponse,
    MCQScoreOut,
    QuestionOut,
    QuestionsKnownRequest,
    QuestionsResponse,
)
from unlearn_core.server.schemas.rmu import RMURunList, RMURunOut, RMUTrainRequest  # noqa: F401
from unlearn_core.server.schemas.targets import (  # noqa: F401
    DEFAULT_RETAIN_CORPORA,
    DEMO_MAX_SCAN,
    MAX_SAVED_QUESTION_CHARS,
    NAME_RE,
    DemoExample,
    DemoInterventionOut,
    DemoRequest,
    DemoResponse,
    TargetCreateRequest,
    TargetDeleted,
    TargetIntervention,
    TargetList,
    TargetOut,
    TargetSelectedFeature,
    TargetSelection,
    TargetSelectRequest,
    TargetSelectResponse,
)
from unlearn_core.server.schemas.tasks import TASK_KINDS, TaskList, TaskOut  # noqa: F401
