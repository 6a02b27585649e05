"""The page under hostile uploads and unexpected failures: a message for the shopper, never a traceback.

Runs the real page (AppTest) on the pinned artifacts, like tests/test_app.py, whose helpers it shares.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from bad_inputs import extreme_corpus
from PIL import Image
from streamlit.testing.v1 import AppTest
from test_app import APP, APP_DIR, DEFAULT_K, RUN_TIMEOUT, has_results, photo, result_ids, upload

from lookalike.model import preprocessing
from lookalike.model.preprocessing import SUPPORTED_FORMATS_TEXT, load_image
from lookalike.search import engine as search
from lookalike.search.engine import Searcher

CORPUS = extreme_corpus()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AppTest:
    monkeypatch.delenv("LOOKALIKE_ARTIFACTS", raising=False)
    monkeypatch.setenv("LOOKALIKE_LIVE_DB", str(tmp_path / "no-live.db"))  # the pinned build alone
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT).run()
    assert not at.exception, at.exception
    return at


def test_streamlit_hides_error_details_from_shoppers() -> None:
    config = tomllib.loads((APP_DIR / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] is False


def test_an_unexpected_error_shows_one_friendly_line_and_the_page_recovers(app: AppTest,
                                                                           monkeypatch: pytest.MonkeyPatch,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    original = Searcher.search

    def broken(self: Searcher, *args: object, **kwargs: object) -> None:
        raise RuntimeError("index shard on fire")

    monkeypatch.setattr(Searcher, "search", broken)
    upload(app, "my-shirt.jpg", photo())  # asserts no exception element reached the page
    assert len(app.error) == 1
    assert "Something went wrong on our side" in app.error[0].value
    assert "index shard on fire" not in app.error[0].value and "Traceback" not in app.error[0].value
    assert any("index shard on fire" in r.getMessage() or (r.exc_info and "index shard on fire" in str(r.exc_info[1]))
               for r in caplog.records)  # the detail is in the server's log

    monkeypatch.setattr(Searcher, "search", original)
    upload(app, "my-other-shirt.jpg", photo(1163))
    assert not app.error and len(result_ids(app)) == DEFAULT_K


@pytest.mark.parametrize("case", list(CORPUS))
def test_every_extreme_file_gets_results_or_a_message(app: AppTest, case: str) -> None:
    data, answers = CORPUS[case]
    upload(app, "upload.png", data)
    if answers:
        assert not app.error and len(result_ids(app)) == DEFAULT_K
    else:
        assert len(app.error) == 1 and "upload.png" in app.error[0].value
        assert not has_results(app)


def test_an_upload_is_decoded_once_and_the_preview_is_what_was_searched(app: AppTest,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[tuple[int, int]] = []

    def counting(*args: object, **kwargs: object) -> Image.Image:
        image = load_image(*args, **kwargs)
        decoded.append(image.size)
        return image

    for module in (preprocessing, search):  # every name the page and the searcher can reach it by
        monkeypatch.setattr(module, "load_image", counting)
    upload(app, "my-shirt.jpg", photo())
    assert decoded == [(60, 80)]
    assert len(app.get_by_key("query-photo").image) == 1 and len(result_ids(app)) == DEFAULT_K


def test_the_uploader_names_the_formats_the_search_accepts(app: AppTest) -> None:
    uploader = app.file_uploader(key="upload")
    assert SUPPORTED_FORMATS_TEXT in uploader.help
    assert sorted(uploader.proto.type) == sorted(f".{e}" for e in ("jpg", "jpeg", "png", "webp", "bmp", "gif"))
