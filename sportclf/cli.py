"""`sportclf`: the command line, built on the Python API (sportclf.client).

Exit codes: 0 every image classified; 1 some images failed (or the service is not ready, for
`health`); 2 a usage error or a service that cannot be used; 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import click
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from sportclf.client import Client
from sportclf.files import find_images, same_file_key
from sportclf.output import FORMATS, OutputError, prepare_resume, writer
from sportclf.transport import ServiceError

INTERRUPTED = 130  # what shells report for a process ended by SIGINT


class Fail(click.ClickException):
    """A one-line error (no usage text) that exits 2: a path that does not exist, a service that is down."""
    exit_code = 2


class Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (ServiceError, OutputError) as exc:
            raise Fail(str(exc)) from None
        except KeyboardInterrupt:  # click would say "Aborted!" and exit 1
            click.echo("interrupted", err=True)
            ctx.exit(INTERRUPTED)


def server_url(ctx: click.Context, param: click.Parameter, url: str) -> str:
    """The service's URL, scheme and host: without them requests can only say InvalidSchema or InvalidURL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        example = "" if "://" in url else f", e.g. http://{url}"
        raise Fail(f"--server needs a URL that starts with http:// or https:// and names a host{example} (got {url})")
    return url


def service_options(command):
    command = click.option("--api-key", envvar="SPORTCLF_API_KEY", show_envvar=True, metavar="KEY",
                           help="Sent as X-API-Key, for a service that requires one "
                                "(the variable keeps it out of the process list).")(command)
    return click.option("--server", default="http://localhost:8000", envvar="SPORTCLF_SERVER", show_default=True,
                        show_envvar=True, metavar="URL", help="The service's base URL.", callback=server_url)(command)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sportclf")
def cli() -> None:
    """Classify photos by sport with a Sport Image Classifier service.

    \b
    Examples:
      sportclf classify photos/ --out results.csv
      sportclf classify photos/ --out results.csv --resume   # finish an interrupted run
      sportclf classify 'shots/**/*.jpg' --format jsonl --server http://host:8000

    \b
    Exit codes: 0 all images classified, 1 some failed, 2 usage error or
    service unreachable, 130 interrupted (Ctrl-C).
    """
    logging.basicConfig(format="sportclf: %(message)s", level=logging.INFO)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


@cli.command(short_help="Classify photos into a CSV or JSON Lines file.")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@service_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Where the results go, one line per image.  [default: results.csv, or results.jsonl]")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format.  [default: jsonl if FILE ends in .jsonl, else csv]")
@click.option("--resume", is_flag=True, help="Append to FILE, skipping the files it already lists "
                                             "(to finish an interrupted run). Without it FILE is replaced.")
@click.option("--in-flight", default=4, show_default=True, type=click.IntRange(1, 64), metavar="N",
              help="Jobs sent ahead of the one being awaited.")
def classify(paths: tuple[str, ...], server: str, api_key: str | None, out: Path | None, fmt: str | None,
             resume: bool, in_flight: int) -> None:
    """Classify the images in PATH... (files, folders searched recursively for images, glob patterns).

    Writes each image's status, its top 3 sports (display names) with their confidences, and why an
    image failed. Ctrl-C cancels the unfinished jobs and keeps what was written; rerun with --resume
    to finish.
    """
    fmt = fmt or ("jsonl" if out and out.suffix == ".jsonl" else "csv")
    out = out or Path(f"results.{fmt}")
    try:
        images = find_images(paths)
        done = prepare_resume(out, fmt) if resume else set()
    except FileNotFoundError as exc:
        raise Fail(f"{exc.strerror}: {exc.filename}") from None
    if not images:
        raise Fail(f"no image files in {' '.join(paths)}")
    todo = [path for path in images if same_file_key(path) not in done]
    if not todo:
        click.echo(f"nothing to do: all {len(images)} images are in {out} already", err=True)
        return
    counts, interrupted = run(Client(server, api_key, in_flight=in_flight), todo, out, fmt, resume)
    click.echo(summary(counts, len(todo), out, skipped=len(images) - len(todo), interrupted=interrupted), err=True)
    click.get_current_context().exit(INTERRUPTED if interrupted else 1 if counts.keys() - {"done"} else 0)


def run(client: Client, images: list[Path], out: Path, fmt: str, append: bool) -> tuple[Counter, bool]:
    """Writes the results as they come: how many ended in each status, and whether Ctrl-C cut the
    run short (the results so far are kept and the unfinished jobs cancelled)."""
    counts: Counter = Counter()
    results = client.classify(images)  # checks the service before the output is touched
    with writer(out, fmt, append) as write, logging_redirect_tqdm():
        try:
            with tqdm(total=len(images), unit="image", disable=None) as bar:
                for result in results:
                    write(result)
                    counts[result.status] += 1
                    bar.update()
        except KeyboardInterrupt:
            return counts, True
        finally:
            results.close()  # cancels what is unfinished; a no-op after the last result
    return counts, False


def summary(counts: Counter, total: int, out: Path, skipped: int, interrupted: bool) -> str:
    statuses = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    line = f"{sum(counts.values())} of {total} images ({statuses or 'none written'}) -> {out}"
    if skipped:
        line += f"; {skipped} were in it already"
    if interrupted:
        line = f"interrupted: {line}; run again with --resume to classify the other {total - sum(counts.values())}"
    return line


@cli.command()
@service_options
def classes(server: str, api_key: str | None) -> None:
    """List the sports the model knows, by display name."""
    for name in Client(server, api_key).classes().values():
        click.echo(name)


@cli.command(short_help="Say whether the service is ready to classify.")
@service_options
def health(server: str, api_key: str | None) -> None:
    """Say whether the service is ready to classify: exit 0 ready, 1 not ready, 2 unreachable."""
    ready = Client(server, api_key).ready()
    model = ready.get("model") or {}
    if ready.get("status") == "ready":
        click.echo(f"ready: redis {ready['redis']}, {ready['workers']} worker(s), model {model.get('name')} "
                   f"{model.get('version')}")
        return
    click.echo(f"not ready: redis {ready.get('redis')}; " + "; ".join(ready.get("problems") or ["no worker"]))
    click.get_current_context().exit(1)


@cli.group(short_help="List the models; canary, promote, roll back, shadow.")
def models() -> None:
    """The service's models and which take the jobs. Changes need the service's API key
    (--api-key or SPORTCLF_API_KEY) and apply at once, with no restart.

    \b
    A rollout:
      sportclf models canary sports100-lite0-int8@1.0.0 10   # 10% of jobs to the candidate
      sportclf models list                                   # shares, workers, accuracy, agreement
      sportclf models promote                                # the canary takes every job
      sportclf models rollback                               # or: the canary takes none
    """


@models.command("list")
@service_options
def list_models(server: str, api_key: str | None) -> None:
    """Each model: its share of jobs, its workers, its card's accuracy, a shadow's agreement."""
    body = Client(server, api_key).models()
    click.echo(routing_line(body["routing"]))
    for model in body["models"]:
        click.echo(model_line(model))


def routing_line(routing: dict) -> str:
    extra = [f"{name} {split['model']} {split['share']:g}%" for name in ("canary", "shadow")
             if (split := routing.get(name))]
    return f"active {routing['active']}" + "".join(f", {part}" for part in extra) + f" (from {routing['source']})"


def top1(figures: dict | None) -> str:
    return f"{figures['top1']:.1%}" if figures else "-"


def model_line(model: dict) -> str:
    line = (f"{model['id']:<32} {model['share']:>5g}% of jobs  {model['workers']} worker(s)  "
            f"top-1 valid {top1(model['accuracy'])}, real-world {top1(model['real_world_accuracy'])}")
    if shadow := model.get("shadow"):
        agreement = "-" if shadow["agreement"] is None else f"{shadow['agreement']:.1%}"
        line += f"  shadow {shadow['share']:g}%: agrees on {shadow['agreed']} of {shadow['compared']} ({agreement})"
    return line


@models.command()
@click.argument("model_id", metavar="NAME@VERSION")
@click.argument("percent", type=click.FloatRange(0, 100))
@service_options
def canary(model_id: str, percent: float, server: str, api_key: str | None) -> None:
    """Send PERCENT of jobs to NAME@VERSION, the rest to the active model."""
    change(server, api_key, {"canary": {"model": model_id, "share": percent}})


@models.command()
@click.argument("model_id", metavar="[NAME@VERSION]", required=False)
@service_options
def promote(model_id: str | None, server: str, api_key: str | None) -> None:
    """Make NAME@VERSION (default: the canary) the active model, taking every job."""
    client = Client(server, api_key)
    canary_now = client.models()["routing"]["canary"]
    if not (model_id or canary_now):
        raise click.UsageError("no canary to promote: name the model")
    change(server, api_key, {"active": model_id or canary_now["model"], "canary": None}, client)


@models.command()
@service_options
def rollback(server: str, api_key: str | None) -> None:
    """Stop the canary: the active model takes every job again."""
    change(server, api_key, {"canary": None})


@models.command()
@click.argument("model_id", metavar="NAME@VERSION")
@click.argument("percent", type=click.FloatRange(0, 100))
@service_options
def shadow(model_id: str, percent: float, server: str, api_key: str | None) -> None:
    """Also classify PERCENT of jobs with NAME@VERSION, unseen by clients, counting agreement (0: stop)."""
    change(server, api_key, {"shadow": {"model": model_id, "share": percent} if percent else None})


def change(server: str, api_key: str | None, changes: dict, client: Client | None = None) -> None:
    click.echo(routing_line((client or Client(server, api_key)).change_routing(changes)))


def main() -> None:
    cli(prog_name="sportclf")
