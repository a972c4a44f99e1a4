"""``chat`` (an interactive REPL, or one question with --ask) and ``index`` (local retrieval over text files)."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click

from sage_ft_cli import retrieval
from sage_ft_cli.app import App, pass_app
from sage_ft_cli.backends import BACKENDS, ChatBackend, embedder
from sage_ft_cli.client import CLIError


def make_backend(app: App, backend: str, name: str | None, base_url: str | None, port: int | None) -> ChatBackend:
    providers = app.settings.providers
    if backend == "finetune":
        if not name:
            raise CLIError("which model? `sage-ft chat NAME` (or --finetune-model, or SAGE_CHAT_FINETUNE_MODEL)")
        # the compatibility port names a local gateway; otherwise the configured one (started if nothing answers)
        url = f"http://127.0.0.1:{port}" if port else app.gateway().url
        return ChatBackend("finetune", f"{url}/v1", name, app.api_key)
    if backend == "openai":
        if providers.openai_api_key is None:
            raise CLIError("the openai backend needs OPENAI_API_KEY")
        return ChatBackend(
            "openai",
            base_url or providers.openai_base_url,
            name or "gpt-4o-mini",
            providers.openai_api_key.get_secret_value(),
        )
    if backend == "vllm":
        if not base_url:
            raise CLIError("the vllm backend needs --base-url (an OpenAI-compatible server, e.g. http://host:8000/v1)")
        return ChatBackend("vllm", base_url, name or _first_model(base_url))
    if backend == "ollama":
        if not name:
            raise CLIError("which Ollama model? `sage-ft chat --backend ollama NAME`")
        return ChatBackend("ollama", base_url or f"{providers.ollama_host.rstrip('/')}/v1", name)
    return ChatBackend("mock", None, name)


def _first_model(base_url: str) -> str:
    import httpx

    try:
        data = httpx.get(f"{base_url.rstrip('/')}/models", timeout=10).json()["data"]
        return str(data[0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as err:
        raise CLIError(f"could not list models at {base_url}: {err}; pass the model name") from None


@click.command()
@click.argument("name", required=False)
@click.option("-q", "--ask", help="Ask one question, print the answer and exit.")
@click.option("--backend", type=click.Choice(BACKENDS), help="Default: finetune with NAME (env SAGE_CHAT_BACKEND).")
@click.option("--base-url", help="OpenAI-compatible endpoint for vllm/openai/ollama.")
@click.option("--finetune-model", help="Same as NAME (kept for compatibility; env SAGE_CHAT_FINETUNE_MODEL).")
@click.option(
    "--finetune-port", type=int, help="Port of the local gateway (compatibility; env SAGE_CHAT_FINETUNE_PORT)."
)
@click.option("--index", "index_name", help="Retrieve passages from this index into the prompt.")
@click.option("--top-k", type=int, default=3, show_default=True)
@click.option("--stream/--no-stream", default=None, help="Stream tokens (default: on in the REPL, off with --ask).")
@click.option("--system", help="A system prompt.")
@click.option("--max-tokens", type=int, default=256, show_default=True)
@pass_app
def chat(
    app: App,
    name: str | None,
    ask: str | None,
    backend: str | None,
    base_url: str | None,
    finetune_model: str | None,
    finetune_port: int | None,
    index_name: str | None,
    top_k: int,
    stream: bool | None,
    system: str | None,
    max_tokens: int,
) -> None:
    """Talk to a fine-tuned model (NAME) or another backend."""
    env = app.settings.chat
    model = name or finetune_model or env.finetune_model
    chosen = backend or env.backend or "finetune"
    if chosen not in BACKENDS:
        raise CLIError(f"SAGE_CHAT_BACKEND={chosen!r}: choose one of {', '.join(BACKENDS)}")
    index = retrieval.load(app.settings.paths.resolved_home(), index_name, _embedder(app)) if index_name else None
    client = make_backend(app, chosen, model, base_url, finetune_port or env.finetune_port)
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    try:
        if ask is not None:
            _turn(app, client, history, ask, index, top_k, bool(stream), max_tokens)
            return
        app.err.print(f"Chatting with {client.model or 'mock'} ({client.name}). /exit quits, /reset forgets.")
        while True:
            try:
                question = click.prompt("you", prompt_suffix="> ", err=True)
            except (EOFError, click.exceptions.Abort):
                break
            if question.strip() in ("/exit", "/quit"):
                break
            if question.strip() == "/reset":
                history = history[:1] if system else []
                continue
            _turn(app, client, history, question, index, top_k, stream is not False, max_tokens)
    finally:
        client.close()


def _embedder(app: App) -> Any:
    """Embeddings through the gateway, reached (or the local stack started) only when an index needs them."""

    def for_model(model: str) -> Any:
        return embedder(f"{app.gateway().url}/v1", app.api_key)(model)

    return for_model


def _turn(
    app: App,
    client: ChatBackend,
    history: list[dict[str, str]],
    question: str,
    index: retrieval.AnyIndex | None,
    top_k: int,
    stream: bool,
    max_tokens: int,
) -> None:
    hits = index.search(question, top_k) if index else []
    prompt = question
    if hits:
        context = "\n\n".join(f"[{i + 1}] ({p.where})\n{p.text}" for i, (_, p) in enumerate(hits))
        prompt = f"Use these passages to answer.\n\n{context}\n\nQuestion: {question}"
    messages = [*history, {"role": "user", "content": prompt}]
    pieces = []
    waiting = app.err.status("waiting for the model (the first request may start its server)...", spinner="dots")
    waiting.start()
    try:
        for piece in client.reply(messages, stream, [p.text for _, p in hits], max_tokens):
            waiting.stop()
            pieces.append(piece)
            if stream and not app.json:
                click.echo(piece, nl=False)
    finally:
        waiting.stop()
    answer = "".join(pieces)
    if app.json:
        app.emit(
            {"model": client.model, "backend": client.name, "answer": answer, "sources": [p.where for _, p in hits]}
        )
    else:
        click.echo("" if stream else answer)
        for i, (_, passage) in enumerate(hits):
            app.err.print(f"[dim][{i + 1}] {passage.where}[/dim]")
    history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


@click.group()
def index() -> None:
    """Local retrieval indexes over text and markdown files."""


@index.command("build")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--embedding-model",
    help="Rank by embeddings from this model (served through the gateway, e.g. all-MiniLM-L6-v2) instead of BM25.",
)
@pass_app
def index_build(app: App, name: str, paths: tuple[Path, ...], embedding_model: str | None) -> None:
    embed = _embedder(app)(embedding_model) if embedding_model else None
    with (
        app.err.status("embedding passages (the first request starts the model server)...", spinner="dots")
        if (embed and not app.json)
        else nullcontext()
    ):
        built = retrieval.build(
            app.settings.paths.resolved_home(), name, list(paths), model=embedding_model, embed=embed
        )
    files = len({p.source for p in built.passages})
    kind = "embedding" if embedding_model else "bm25"
    if app.json:
        app.emit(
            {"name": name, "kind": kind, "model": embedding_model, "passages": len(built.passages), "files": files}
        )
    else:
        how = f"embeddings from {embedding_model}" if embedding_model else "BM25"
        app.console.print(f"index '{name}': {len(built.passages)} passages from {files} file(s) ({how})")


@index.command("list")
@pass_app
def index_list(app: App) -> None:
    app.emit(
        retrieval.listing(app.settings.paths.resolved_home()), ["name", "kind", "model", "passages", "files", "path"]
    )


def register(cli: click.Group) -> None:
    cli.add_command(chat)
    cli.add_command(index)
