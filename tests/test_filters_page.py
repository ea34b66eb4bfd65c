"""The Filters page through AppTest on the shipped synthetic-demo run: it draws the cards and the
feature-map grid, a page turn shows the next 16 filters, and a rerun computes nothing again."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from fer.explain import filters as fl

APP = Path(__file__).resolve().parents[1] / "streamlit_app.py"
PAGE = "app_pages/filters.py"
LAST = "features.3.0"  # seed_cnn's last conv layer, the page's default


def images_of(at: AppTest) -> list:
    """Every st.image element's images (a list call is one element holding many)."""
    return [img for el in at.get("image") for img in el.proto.imgs]


def open_page() -> AppTest:
    st.cache_data.clear()  # the page's caches live in this process across tests
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.query_params["run"] = "synthetic-demo"
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


@pytest.fixture(scope="module")
def page() -> AppTest:
    return open_page()


def test_page_draws_cards_and_every_feature_map(page):
    at = page
    assert at.title[0].value.startswith("Filters")
    assert at.selectbox(key="filters_layer").value == LAST
    captions = [img.caption for img in images_of(at)]
    cards = [c for c in captions if c.startswith("filter ")]
    assert [c.split(" · ")[0] for c in cards] == [f"filter {i}" for i in range(16)]
    assert any(h.value.startswith("All 128 feature maps of PrivateTest #0") for h in at.subheader)
    assert len(images_of(at)) == 1 + 16 + 1  # the face, the cards, the sheet of all 128 maps
    assert any("explain" in c.value and "topk_m00_features.3.0_private_test.npz" in c.value
               for c in at.caption)


def test_a_page_turn_shows_the_next_filters_and_a_rerun_computes_nothing(page, monkeypatch):
    at = page
    at.select_slider(key=f"filters_page_{LAST}").set_value(1).run()
    assert not at.exception, at.exception
    cards = [img.caption.split(" · ")[0] for img in images_of(at) if img.caption.startswith("filter ")]
    assert cards == [f"filter {i}" for i in range(16, 32)]

    def must_not_run(*a, **k):
        raise AssertionError("recomputed on a rerun")

    monkeypatch.setattr(fl, "top_activating", must_not_run)
    monkeypatch.setattr(fl, "filter_patterns", must_not_run)
    at.toggle(key="filters_shared").set_value(False).run()  # a redraw, same filters and face
    assert not at.exception, at.exception
    at.number_input(key="filters_face").set_value(7).run()  # another face: only its maps
    assert not at.exception, at.exception
    assert any(img.caption.startswith("PrivateTest #7 ") for img in images_of(at))


def test_an_early_layer_and_another_member():
    at = open_page()
    at.selectbox(key="filters_member").set_value(3).run()
    at.selectbox(key="filters_layer").set_value("features.0.0").run()
    assert not at.exception, at.exception
    at.select_slider(key="filters_page_features.0.0").set_value(1).run()
    assert not at.exception, at.exception
    cards = [img.caption.split(" · ")[0] for img in images_of(at) if img.caption.startswith("filter ")]
    assert cards == [f"filter {i}" for i in range(16, 32)]
