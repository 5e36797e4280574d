"""The preflight: what a real user gets wrong first (wrong port, wrong or missing key, unknown model,
a context too short, a base model that is not there) fails before any job runs and before anything
is paid, naming the role (config key), the endpoint and its URL."""
import copy
import shutil
import socket
import subprocess
import sys

import pytest
import yaml
from snakemake.utils import validate

from lionflow.preflight import PreflightError, preflight

from conftest import ROOT
from testserver import ServerConfig, TestServer

KEY_ENV = "LIONFLOW_TEST_KEY"


def config_with(endpoint: dict, model: str = "oracle", **student) -> dict:
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["llm"]["endpoints"] = {"oracle": {"base_url": "builtin://oracle"}, "remote": endpoint}
    config["llm"]["teacher"] |= {"endpoint": "remote", "model": model}
    config["student"] |= student
    validate(config, str(ROOT / "config" / "schema.yaml"))
    return config


@pytest.fixture(scope="module")
def server():
    with TestServer(ServerConfig(api_key="s3cret")) as s:
        yield s


def expect(config, *fragments):
    with pytest.raises(PreflightError) as e:
        preflight(copy.deepcopy(config))
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)
    assert "s3cret" not in str(e.value)
    return str(e.value)


def test_a_good_endpoint_passes(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "s3cret")
    preflight(config_with({"base_url": server.url, "api_key_env": KEY_ENV}))
    assert server.server.log == []  # the model list is free: no chat request was made


def test_wrong_port_names_role_endpoint_and_url(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    expect(config_with({"base_url": url}), "llm.teacher", "'remote'", url, "cannot reach")


def test_missing_and_wrong_key(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    expect(config_with({"base_url": server.url, "api_key_env": KEY_ENV}), "llm.teacher", server.url,
           f"${KEY_ENV} is not set")
    monkeypatch.setenv(KEY_ENV, "wrong")
    expect(config_with({"base_url": server.url, "api_key_env": KEY_ENV}), "HTTP 401", f"${KEY_ENV}", server.url)
    monkeypatch.delenv(KEY_ENV)
    expect(config_with({"base_url": server.url}), "HTTP 401", "without an API key")


def test_unknown_model_lists_what_is_served(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "s3cret")
    expect(config_with({"base_url": server.url, "api_key_env": KEY_ENV}, model="gpt-4o-mini"),
           "llm.teacher.model='gpt-4o-mini'", server.url, "it serves: oracle")


def test_max_tokens_beyond_the_served_context_is_named():
    """vLLM's model list reports each model's context (max_model_len): max_tokens must fit in it."""
    with TestServer(ServerConfig(max_model_len=1024)) as s:
        config = config_with({"base_url": s.url})
        config["llm"]["teacher"]["params"] = {"max_tokens": 1024}
        expect(config, "llm.teacher.params.max_tokens=1024 does not fit the context of 'oracle'", s.url, "1024 tokens")
        config["llm"]["teacher"]["params"] = {"max_tokens": 1000}
        preflight(copy.deepcopy(config))   # room for a prompt: fine


def test_wrong_path_and_builtin_typo(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "s3cret")
    root = server.url.removesuffix("/v1")
    expect(config_with({"base_url": root, "api_key_env": KEY_ENV}), "HTTP 404", root, "API root")
    expect(config_with({"base_url": "builtin://oracl"}), "builtin://oracl", "llm.teacher")
    # a provider without a model list: preflight false skips the GET, the key is still checked
    monkeypatch.delenv(KEY_ENV)
    expect(config_with({"base_url": root, "api_key_env": KEY_ENV, "preflight": False}), f"${KEY_ENV} is not set")


def test_base_model_problems_name_the_key(tmp_path):
    oracle = {"base_url": "builtin://oracle"}
    expect(config_with(oracle, base_model=str(tmp_path / "nothing.gguf")), "student.base_model", "no such file")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text('{"max_position_embeddings": 64}')
    expect(config_with(oracle, base_model=str(tmp_path / "empty")), "student.base_model", "no weights")
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"")
    expect(config_with(oracle, base_model=str(tmp_path / "empty")), "student.train.max_length=256",
           "(64 tokens)")


def test_lora_schema_and_4bit_on_the_cpu():
    """LoRA is off by default; its keys are strict; 4-bit loading on the CPU is an error naming the key."""
    oracle = {"base_url": "builtin://oracle"}
    assert config_with(oracle)["student"]["train"]["lora"] == {
        "enabled": False, "r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear", "load_in_4bit": False}
    lora = {"enabled": True, "load_in_4bit": True}
    expect(config_with(oracle, device="cpu", train={"lora": lora}), "student.train.lora.load_in_4bit", "needs a GPU")
    with pytest.raises(Exception, match="rank"):
        config_with(oracle, train={"lora": {"enabled": True, "rank": 8}})


def test_gguf_context_is_read_from_its_metadata():
    from lionflow.student.facts import base_model_context

    gguf = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.is_file(), "make smollm2 (make test does) fetches it"
    assert base_model_context(str(gguf)) == 8192


def test_dry_run_reports_it_before_any_job(tmp_path):
    """`snakemake -n` fails at parse time with the message; no job, no result directory."""
    for name in ("Snakefile", "rules", "workflow", "config", "resources"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, tmp_path / name)
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("llm:\n  endpoints:\n    oracle: {base_url: 'builtin://oracl'}\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", str(cfg)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "builtin://oracl" in proc.stdout + proc.stderr and "llm.teacher" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def _with_prompt(tmp_path, key, text):
    path = tmp_path / f"{key.replace('.', '_')}.yaml"
    path.write_text(text)
    config = config_with({"base_url": "builtin://oracle"})
    section, role, name = key.split(".")
    config[section][role][name] = str(path)
    return config, str(path)


@pytest.mark.parametrize("key, text, fragment", [
    # every instruction would get the same request: the student trains on copies of one answer
    ("llm.teacher.prompt", "user: Answer the question well.\n", "does not change with {{ instruction }}"),
    # a referee that is never asked for score lines: every reply fails after it was paid for
    ("llm.referee.prompt", "user: 'Compare {{ answer_1 }} and {{ answer_2 }} for {{ instruction }}.'\n",
     "score lines the parser reads"),
    ("llm.generator.prompt_hard", "user: Write one like {{ instrction }}\n", "instrction"),
    ("llm.generator.prompt_easy", "user: ok\nsystem: [unclosed\n", "not valid YAML"),
    ("llm.teacher.prompt", "user: '{{ instruction '\n", "template line 1"),
])
def test_prompt_problems_are_found_before_paying(tmp_path, key, text, fragment):
    config, path = _with_prompt(tmp_path, key, text)
    expect(config, key, path, fragment)


def test_shipped_prompts_pass():
    assert preflight(config_with({"base_url": "builtin://oracle"})) is None


@pytest.mark.parametrize("role, typo", [("teacher", "modle"), ("referee", "parse_retrys"), ("generator", "prompt")])
def test_typos_inside_a_role_are_errors(role, typo):
    """A key the schema does not know, inside a role, fails validation naming it (it was silently ignored)."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["llm"][role][typo] = "x"
    with pytest.raises(Exception, match=typo):
        validate(config, str(ROOT / "config" / "schema.yaml"))
