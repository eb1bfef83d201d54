"""The fit/validation split the shop and benchmarks/bench_quality.py share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from similarity.training_data import split_training_data, validation_products

REPO = Path(__file__).resolve().parents[2]


def _data():
    rng = np.random.default_rng(0)
    street_labels = np.repeat(np.arange(20), 3)  # products 0-19 have training crops
    shop_labels = np.repeat(np.arange(25), 2)  # 20-24 are test products: shop photos only here
    return rng.normal(size=(60, 4)), street_labels, rng.normal(size=(50, 4)), shop_labels


def test_it_holds_out_whole_products_and_keeps_test_products_out():
    street, street_labels, shop, shop_labels = _data()

    data = split_training_data(street, street_labels, shop, shop_labels, seed=7)

    held = set(np.unique(data.validation.query_labels).tolist())
    fit = set(np.unique(data.street_labels).tolist())
    assert len(held) == 3 and not held & fit and held | fit == set(range(20))
    assert set(data.shop_labels.tolist()) == fit  # negatives from fit products only
    assert set(data.validation.gallery_labels.tolist()) == fit | held  # never a test product
    assert data.counts == {
        "train_products": 17,
        "validation_products": 3,
        "train_street_crops": 51,
        "validation_street_crops": 9,
        "train_shop_images": 34,
    }


def test_it_splits_the_same_way_for_the_same_seed():
    street_labels = _data()[1]

    assert validation_products(street_labels, seed=7) == validation_products(street_labels, seed=7)
    assert validation_products(street_labels, seed=7) != validation_products(street_labels, seed=8)


def test_it_keeps_every_product_for_the_fit_below_four_products():
    street, street_labels, shop, shop_labels = _data()
    few = street_labels < 3

    data = split_training_data(street[few], street_labels[few], shop, shop_labels, seed=0)

    assert data.validation is None and data.counts["validation_products"] == 0


def test_it_keeps_the_training_rules_free_of_tensorflow_and_django():
    code = (
        "import sys, similarity.train_config, similarity.metrics, similarity.gate, similarity.training_data\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'django') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)
