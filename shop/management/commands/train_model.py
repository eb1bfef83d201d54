"""Start a siamese training run on the workers, as the admin's button does."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any, TextIO, cast

from django.core.management.base import BaseCommand, CommandError

from shop.management.progress import wait_until
from shop.models import Category, ModelVersion
from shop.services.training import TrainingAlreadyRunning, request_training
from similarity.train_config import InvalidTrainConfig, TrainConfig

FINAL = {ModelVersion.Status.READY, ModelVersion.Status.ACTIVE, ModelVersion.Status.FAILED}


def describe(version: ModelVersion) -> str:
    progress = version.progress or {}
    stage = progress.get("stage") or version.status
    if stage == "training":
        loss = version.history[-1]["loss"] if version.history else None
        text = f"{version}: training epoch {progress.get('epoch', 0)}/{progress.get('epochs', '?')}"
        return text + (f" loss {loss:.4f}" if loss is not None else "")
    if "done" in progress:
        return f"{version}: {stage} {progress['done']}/{progress.get('total', '?')}"
    return f"{version}: {stage}"


def parse_params(params: list[str]) -> dict[str, object]:
    """`--param name=value` pairs as overrides; the values are checked (and typed) by TrainConfig."""
    overrides: dict[str, object] = {}
    for item in params:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise CommandError(f"--param {item!r}: use NAME=VALUE, e.g. --param learning_rate=3e-4")
        overrides[name.strip()] = value
    return overrides


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Queue a training run (train, evaluate, embed the catalogue, activate)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--category", default=Category.DRESSES, choices=Category.values)
        parser.add_argument("--epochs", type=_positive_int, help="override SIAMESE_EPOCHS for this run (1 or more)")
        parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help=f"override one hyperparameter for this run (repeatable); names: {', '.join(TrainConfig.field_names())}",
        )
        parser.add_argument("--wait", action="store_true", help="show progress until the run ends")
        parser.add_argument("--stall-timeout", type=float, default=900.0)

    def handle(
        self,
        *args: Any,
        category: str,
        epochs: int | None,
        param: list[str],
        wait: bool,
        stall_timeout: float,
        **options: Any,
    ) -> None:
        overrides = parse_params(param)
        if epochs is not None:
            overrides["epochs"] = epochs
        try:
            version = request_training(category=category, hyperparameters=overrides)
        except (TrainingAlreadyRunning, InvalidTrainConfig) as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"queued training run {version}")
        if not wait:
            return

        def poll() -> tuple[bool, str, object]:
            version.refresh_from_db()
            line = describe(version)
            return version.status in FINAL, line, line

        # OutputWrapper is a text stream over the command's stdout; wait_until calls only isatty, write, flush.
        if not wait_until(poll, stream=cast(TextIO, self.stdout), stall_timeout=stall_timeout):
            raise CommandError("the training run did not finish")
        if version.status == ModelVersion.Status.FAILED:
            raise CommandError(f"training run failed: {version.error}")
        test = version.run_metrics.test
        if test is not None and test.baseline is not None and test.siamese is not None:
            self.stdout.write(f"test top-20: baseline {test.baseline.top20:.3f}, siamese {test.siamese.top20:.3f}")
        self.stdout.write(self.style.SUCCESS(f"{version} is {version.get_status_display().lower()}"))
