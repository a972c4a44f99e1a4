"""Chat, completions and deployments: declared here, forwarded to serving (which deploys on the first request).

The request bodies name what the gateway and serving need (``model``, ``messages``/``prompt``) and allow every other
OpenAI sampling parameter, which the engine itself checks; responses are OpenAI's objects, with ``model`` always the
name the client asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from sage_ft.protocol.common import MODEL_ID, ApiModel


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model: str = Field(pattern=MODEL_ID)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())
    model: str = Field(pattern=MODEL_ID)
    prompt: str | list[str]
    stream: bool | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


Text = Annotated[str, Field(pattern=r"\S", max_length=100_000)]  # not blank


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = Field(pattern=MODEL_ID, description="An embedding model under the models root, e.g. all-MiniLM-L6-v2")
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=2048)] = Field(
        description="A text, or up to 2048 texts (none blank)."
    )
    encoding_format: Literal["float", "base64"] | None = None  # the openai SDK asks for base64 unless told
    user: str | None = None


class Embedding(ApiModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # a base64 string of little-endian float32 when asked for


class EmbeddingList(ApiModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: dict[str, Any] | None = None


class Completion(ApiModel):
    id: str
    object: str
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class DeployRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = Field(pattern=MODEL_ID)
    engine: Literal["vllm", "transformers", "auto"] | None = None
    wait: bool = False


ServingMode = Literal["adapter", "merged", "embedding"]


class ServingPlan(ApiModel):
    """How a model is served (an adapter on its base's server, a merged model, an embedding model), and the
    server's limits."""

    mode: ServingMode
    max_model_len: int | None = None
    max_lora_rank: int | None = None
    adapter_rank: int | None = None
    reason: str | None = None
    notes: list[str] = []


class ModelServer(ApiModel):
    """The model server a deployment runs on (several deployments share one)."""

    name: str
    engine: str
    state: Literal["starting", "ready", "stopped"]
    endpoint: str | None = None
    pid: int | None = None
    models: int
    started_at: int
    max_model_len: int | None = None
    max_lora_rank: int | None = None
    log: str | None = None


class DeploymentError(ApiModel):
    code: str | None = None
    message: str


class DeploymentObject(ApiModel):
    object: Literal["deployment"]
    id: str
    model: str
    alias: str | None = None
    state: Literal["deploying", "ready", "failed", "stopped"]
    engine: str
    endpoint: str | None = None
    health: Literal["healthy", "unhealthy", "unknown"]
    serving: ServingPlan | None = None
    server: ModelServer | None = None
    created_at: int
    ready_at: int | None = None
    cold_start_seconds: float | None = None
    error: DeploymentError | None = None


class DeploymentList(ApiModel):
    object: Literal["list"]
    data: list[DeploymentObject]


class DeploymentDeleted(ApiModel):
    object: Literal["deployment.deleted"]
    id: str
    deleted: bool


class PythonGraderCall(BaseModel):
    """``POST /v1/graders/python``: one python grader call for serving's sandbox (gateway and workers send it)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(max_length=256 * 1024)
    sample: dict[str, Any]
    item: Any = None
    image_tag: str | None = None


class PythonGraderAnswer(BaseModel):
    """What the sandboxed call came to: a score, or the kind of error and why (``sage_ft.graders.PythonOutcome``)."""

    score: float | None
    seconds: float
    error: str | None = None
    details: str | None = None
