"""Export helpers (the whole export runs on the micro run in tests/test_pipeline.py)."""
from lionflow.export import public_url


def test_a_base_url_never_carries_credentials_into_a_card():
    assert public_url("https://user:s3cret@llm.example.com:8443/v1") == "https://llm.example.com:8443/v1"
    assert public_url("https://token@llm.example.com/v1") == "https://llm.example.com/v1"
    assert public_url("http://gpu-node:8000/v1") == "http://gpu-node:8000/v1"
    assert public_url("builtin://oracle") == "builtin://oracle"
