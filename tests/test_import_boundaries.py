"""Packages that must stay light: each module is imported in a fresh interpreter and its imports listed."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import shop.street2shop
from tests.conftest import REPO

# Every module of the package, so a new one is covered without editing this list.
STREET2SHOP_MODULES = sorted(
    info.name for info in pkgutil.walk_packages(shop.street2shop.__path__, prefix="shop.street2shop.")
)


def imported_by(module: str) -> list[str]:
    """The modules a fresh interpreter holds after importing ``module``."""
    code = f"import sys, {module}\nprint('\\n'.join(sys.modules))\n"
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, timeout=120, capture_output=True, text=True
    )
    return run.stdout.split()


def test_it_keeps_the_web_facing_similarity_modules_free_of_tensorflow_and_django():
    code = (
        "import sys, similarity.files, similarity.images, similarity.neighbours, similarity.evaluation, "
        "similarity.backbone, similarity.siamese\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'django') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


def test_it_finds_every_street2shop_module():
    assert {"shop.street2shop.download", "shop.street2shop.metadata", "shop.street2shop.demo.dataset"} <= set(
        STREET2SHOP_MODULES
    )


@pytest.mark.parametrize("module", STREET2SHOP_MODULES)
def test_it_keeps_street2shop_free_of_django_and_the_rest_of_the_shop(module: str):
    modules = imported_by(module)

    assert not [name for name in modules if name == "django" or name.startswith("django.")]
    # similarity is allowed; of shop, only the (empty) package itself and this one.
    outside = [name for name in modules if name.startswith("shop.") and not name.startswith("shop.street2shop")]
    assert not outside, outside
