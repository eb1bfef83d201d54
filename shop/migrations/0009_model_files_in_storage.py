"""Towers are named in the "models" storage instead of by a local path, so any host can fetch them."""

from pathlib import Path

from django.conf import settings
from django.db import migrations


def to_storage_names(apps, schema_editor):
    """A path inside MODEL_STORE becomes its name there; any other path stays, and fails loudly when loaded."""
    ModelVersion = apps.get_model("shop", "ModelVersion")
    store = Path(settings.MODEL_STORE).resolve()
    for version in ModelVersion.objects.exclude(artifact_name=""):
        path = Path(version.artifact_name)
        if path.is_absolute() and path.resolve().is_relative_to(store):
            version.artifact_name = path.resolve().relative_to(store).as_posix()
            version.save(update_fields=["artifact_name"])


def to_paths(apps, schema_editor):
    ModelVersion = apps.get_model("shop", "ModelVersion")
    store = Path(settings.MODEL_STORE).resolve()
    for version in ModelVersion.objects.exclude(artifact_name=""):
        if not Path(version.artifact_name).is_absolute():
            version.artifact_name = str(store / version.artifact_name)
            version.save(update_fields=["artifact_name"])


class Migration(migrations.Migration):
    dependencies = [("shop", "0008_colours_duplicates_search_category")]

    operations = [
        migrations.RenameField("modelversion", "artifact_path", "artifact_name"),
        migrations.RunPython(to_storage_names, to_paths),
    ]
