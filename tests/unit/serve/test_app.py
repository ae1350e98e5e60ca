"""Tests of the HTTP API in process (the real-process tests are integration)."""

from __future__ import annotations

import io
import threading

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mlkit.serve.app import create_app
from mlkit.serve.config import ServeConfig
from mlkit.serve.predictor import Predictor
from mlkit.train.run import load_model


@pytest.fixture(scope="module")
def predictor(tiny_model):
    result, _ = tiny_model
    return Predictor(load_model(result.model_dir))


def jpeg(size=(40, 40), colour=(180, 60, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def client(predictor):
    app = create_app(ServeConfig(max_upload_bytes=64 * 1024), load=lambda c: predictor)
    with TestClient(app) as client:
        _wait_ready(client)
        yield client


def _wait_ready(client: TestClient) -> None:
    for _ in range(200):
        if client.get("/readyz").status_code == 200:
            return
        threading.Event().wait(0.05)
    raise AssertionError("never ready")


def test_predict_multipart_and_json_agree(client, predictor):
    image = jpeg()
    multipart = client.post(
        "/v1/predict",
        files={"image": ("a.jpg", image, "image/jpeg")},
        data={"text": "itchy red patch", "top_k": "3"},
    )
    assert multipart.status_code == 200, multipart.text
    import base64

    as_json = client.post(
        "/v1/predict",
        json={
            "image": base64.b64encode(image).decode(),
            "text": "itchy red patch",
            "top_k": 3,
        },
    )
    first, second = multipart.json(), as_json.json()
    for body in (first, second):
        assert body["model_version"] == predictor.version
        assert set(body["timing_ms"]) == {"total", "queue", "inference", "batch_size"}
        assert len(body["top_k"]) == 3
        assert body["top_k"][0]["label"] == body["top_class"]
    first.pop("timing_ms"), second.pop("timing_ms")
    assert first == second


def test_embeddings_route_and_text_embeddings(client, predictor):
    image = predictor.prepare_image(Image.open(io.BytesIO(jpeg())).convert("RGB"))
    embedding = predictor.vision_embeddings(image.unsqueeze(0))[0].tolist()
    response = client.post(
        "/v1/predict/embeddings", json={"vision_embedding": embedding, "top_k": 2}
    )
    assert response.status_code == 200, response.text
    from_image = client.post(
        "/v1/predict",
        files={"image": ("a.jpg", jpeg(), "image/jpeg")},
        data={"top_k": "2"},
    )
    assert response.json()["top_k"] == from_image.json()["top_k"]

    texts = client.post("/v1/embed-text", json={"texts": ["scaly plaque", ""]})
    body = texts.json()
    assert texts.status_code == 200
    assert body["dim"] == predictor.text_dim
    assert len(body["embeddings"]) == 2 and not any(body["embeddings"][1])


def test_model_classes_health_and_metrics(client, predictor):
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/v1/classes").json()["classes"] == predictor.classes
    model = client.get("/v1/model").json()
    assert model["card"]["weights_sha256"] == predictor.version
    assert model["serving"]["vision_embedding_dim"] == predictor.vision_dim
    client.post("/v1/predict", files={"image": ("a.jpg", jpeg(), "image/jpeg")})
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert (
        'mlkit_requests_total{method="POST",route="/v1/predict",status="200"} 1.0'
        in text
    )
    assert 'route="other",status="404"' in text
    assert "mlkit_batch_size_count 1.0" in text
    assert f'mlkit_model_info{{classes="{len(predictor.classes)}"' in text
    assert "mlkit_ready 1.0" in text
    assert "mlkit_queue_depth 0.0" in text


def test_errors_are_json_with_stable_codes(client):
    cases = [
        (client.get("/nowhere"), 404, "not_found"),
        (client.get("/v1/predict"), 405, "method_not_allowed"),
        (client.post("/v1/predict", content=b""), 400, "malformed_body"),
        (
            client.post(
                "/v1/predict", files={"image": ("a.gif", b"GIF89a...", "image/gif")}
            ),
            415,
            "unsupported_image_format",
        ),
        (
            client.post(
                "/v1/predict",
                content=b"x" * 200_000,
                headers={"content-type": "application/json"},
            ),
            413,
            "payload_too_large",
        ),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert body["error"] == code
        assert "Traceback" not in response.text


def test_body_without_content_length_is_counted(client):
    def chunks():
        for _ in range(40):
            yield b"y" * 4096

    response = client.post(
        "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_not_ready_while_loading_then_ready(predictor):
    release = threading.Event()

    def slow_load(config):
        release.wait(10)
        return predictor

    with TestClient(create_app(ServeConfig(), load=slow_load)) as client:
        assert client.get("/healthz").status_code == 200
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"] == "not_ready"
        predict = client.post(
            "/v1/predict", files={"image": ("a.jpg", jpeg(), "image/jpeg")}
        )
        assert predict.status_code == 503
        assert predict.headers["retry-after"] == "1"
        release.set()
        _wait_ready(client)


def test_failed_load_stays_unready_and_says_why():
    def broken(config):
        raise OSError("model.safetensors: no such file")

    with TestClient(create_app(ServeConfig(), load=broken)) as client:
        for _ in range(100):
            response = client.get("/readyz")
            if "failed" in response.json()["detail"]:
                break
            threading.Event().wait(0.05)
        assert response.status_code == 503
        assert "no such file" in response.json()["detail"]
        assert client.get("/healthz").status_code == 200
        assert "mlkit_ready 0.0" in client.get("/metrics").text


def test_draining_refuses_new_work(client):
    service = client.app.state.service
    service.begin_drain()
    assert client.get("/readyz").json()["error"] == "draining"
    response = client.post(
        "/v1/predict", files={"image": ("a.jpg", jpeg(), "image/jpeg")}
    )
    assert response.status_code == 503
    assert response.json()["error"] == "draining"


def test_overload_is_503_with_retry_after(client):
    service = client.app.state.service
    service.admitted = service.max_admitted
    try:
        response = client.post(
            "/v1/predict", files={"image": ("a.jpg", jpeg(), "image/jpeg")}
        )
    finally:
        service.admitted = 0
    assert response.status_code == 503
    assert response.json()["error"] == "overloaded"
    assert int(response.headers["retry-after"]) >= 1


def test_unexpected_errors_hide_the_trace(predictor, caplog):
    class Exploding(Predictor):
        def __init__(self):
            self.__dict__.update(predictor.__dict__)

        def run_batch(self, jobs):
            raise RuntimeError("secret internal detail")

    app = create_app(ServeConfig(), load=lambda c: Exploding())
    with TestClient(app, raise_server_exceptions=False) as client:
        _wait_ready(client)
        response = client.post(
            "/v1/predict", files={"image": ("a.jpg", jpeg(), "image/jpeg")}
        )
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "secret" not in response.text
