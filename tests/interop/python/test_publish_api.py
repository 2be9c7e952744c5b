"""The publish/control API answers as Pushpin's does (reference §4.1)."""

import json

import requests

ITEM = {"channel": "api", "formats": {"http-stream": {"content": "x"}}}


def post(holdfast, body, **headers):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(holdfast.pub_url("/publish/"), data=data, headers=headers, timeout=5)


def test_publish_answers_published_as_text_or_json(holdfast):
    text = post(holdfast, {"items": [ITEM]})
    assert text.status_code == 200
    assert text.headers["Content-Type"].startswith("text/plain")
    assert text.text.rstrip("\n") == "Published"

    as_json = post(holdfast, {"items": [ITEM]}, Accept="application/json")
    assert as_json.status_code == 200
    assert as_json.headers["Content-Type"].startswith("application/json")
    assert as_json.json() == {"message": "Published"}


def test_publish_path_without_trailing_slash_is_accepted(holdfast):
    resp = requests.post(holdfast.pub_url("/publish"), json={"items": [ITEM]}, timeout=5)
    assert resp.status_code == 200


def test_publish_rejects_other_methods_with_allow_post(holdfast):
    resp = requests.get(holdfast.pub_url("/publish/"), timeout=5)
    assert resp.status_code == 405
    assert resp.headers["Allow"] == "POST"


def test_publish_rejects_an_unsupported_accept(holdfast):
    resp = post(holdfast, {"items": [ITEM]}, Accept="image/png")
    assert resp.status_code == 406
    assert resp.text.rstrip("\n") == (
        "Not Acceptable. Supported formats are text/plain and application/json."
    )


def test_publish_rejects_an_item_without_content(holdfast):
    item = {"channel": "api", "formats": {"http-stream": {}}}
    resp = post(holdfast, {"items": [item]})
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("text/plain")
    assert resp.text.rstrip("\n") == (
        "Invalid format: 'http-stream' does not contain 'content' or 'content-bin'"
    )


def test_publish_requires_content_length(holdfast):
    chunked = iter([json.dumps({"items": [ITEM]}).encode()])
    resp = requests.post(holdfast.pub_url("/publish/"), data=chunked, timeout=5)
    assert resp.status_code == 411
    assert resp.text.rstrip("\n") == "Request requires Content-Length."


def test_unknown_control_path_is_not_found(holdfast):
    assert requests.get(holdfast.pub_url("/nope"), timeout=5).status_code == 404
