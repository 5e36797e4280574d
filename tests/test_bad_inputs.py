"""What a user gets wrong, as a test suite: every bad or odd input fails before anything is paid
for (the test server counts the chat requests it answers), with an error that names its place
(the config key, the role and its endpoint URL, or the file and line); damage to the response
cache is reported with its path and line; and on the fixed rerun nothing is paid twice."""
import copy
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from lionflow.artifacts import ArtifactError, read_jsonl
from lionflow.llm import LLM, ResponseCache
from lionflow.llm.cache import CacheUnwritable
from lionflow.preflight import PreflightError, preflight

from conftest import ROOT, make_llm
from testserver import ServerConfig, TestServer

SCHEMA = str(ROOT / "config" / "schema.yaml")
MICRO_SEEDS = ROOT / "tests" / "micro" / "seed_instructions.jsonl"


@pytest.fixture(scope="module")
def server():
    with TestServer(ServerConfig(models=("oracle", "judge-model"))) as s:
        yield s


def paid(server) -> int:
    """Chat requests the server answered: what the user paid for."""
    return sum(1 for e in server.log() if e.get("outcome") == "ok")


@pytest.fixture
def base(server, tmp_path, monkeypatch):
    """The micro config with every role on the test server; run from a scratch directory."""
    monkeypatch.chdir(tmp_path)
    for name in ("resources", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    micro = yaml.safe_load((ROOT / "tests" / "micro" / "config.yaml").read_text())
    config.update({k: v for k, v in micro.items() if k not in ("student", "eval", "generation", "pools")})
    config["student"]["train"] |= micro["student"]["train"]
    config["run"] = "bad-inputs"
    config["llm"]["cache_dir"] = str(tmp_path / "cache")
    config["llm"]["endpoints"] = {"remote": {"base_url": server.url}}
    for role in ("teacher", "referee", "generator"):
        config["llm"][role] |= {"endpoint": "remote", "model": "oracle"}
    return config


def problems_of(config: dict) -> str | None:
    """Validation, then preflight, as rules/common.smk runs them; the error text, None when it passes."""
    config = copy.deepcopy(config)
    try:
        validate(config, SCHEMA)
        preflight(config)
    except (PreflightError, Exception) as e:   # snakemake's validate raises WorkflowError
        return str(e)
    return None


def set_key(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = config
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def delete_key(config: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = config
    for p in parents:
        node = node[p]
    del node[last]


def test_the_base_config_passes(base, server):
    before = paid(server)
    assert problems_of(base) is None
    assert paid(server) == before


# ----------------------------------------------------------------------------------- config values
CONFIG_CASES = [
    # (case, dotted key, value, fragments the error must carry)
    ("negative threshold", "discrimination.threshold", -1, ["['discrimination']['threshold']", "minimum"]),
    ("threshold above the score range", "discrimination.threshold", 12, ["['discrimination']['threshold']"]),
    ("zero iterations", "iterations", 0, ["['iterations']"]),
    ("negative seed", "seed", -3, ["['seed']"]),
    ("typo inside the teacher", "llm.teacher.modle", "x", ["modle"]),
    ("typo inside the referee", "llm.referee.parse_retrys", 2, ["parse_retrys"]),
    ("typo in the student", "student.trian", {}, ["trian"]),
    ("typo in training", "student.train.learning_rte", 1e-4, ["learning_rte"]),
    ("typo at the top", "iteratons", 3, ["iteratons"]),
    ("typo in an endpoint", "llm.endpoints.remote.max_concurency", 4, ["max_concurency"]),
    ("zero concurrency", "llm.endpoints.remote.max_concurrency", 0, ["['max_concurrency']"]),
    ("negative budget", "llm.budget_usd", -5, ["['budget_usd']"]),
    ("negative price", "llm.prices", {"oracle": {"input_per_mtok": -1}}, ["input_per_mtok"]),
    ("zero learning rate as a string", "student.train.learning_rate", "1e-4", ["['learning_rate']"]),
    ("failure tolerance above 1", "llm.failure_tolerance", 1.5, ["['failure_tolerance']"]),
    ("unknown student device", "student.device", "tpu", ["['device']"]),
    ("unknown generate backend", "student.generate.backend", "tgi", ["['backend']"]),
    ("unknown init", "student.init", "last", ["['init']"]),
    ("zero max_length", "student.train.max_length", 0, ["['max_length']"]),
    ("empty lm-eval task list", "eval.lm_eval.tasks", [], ["['tasks']"]),
    ("a role on an endpoint not declared", "llm.teacher.endpoint", "remot", ["llm.teacher.endpoint", "remot"]),
    ("base_url typo of the built-in", "llm.endpoints.remote.base_url", "builtin://oracl",
     ["builtin://oracl", "llm.teacher"]),
    ("base_url without scheme", "llm.endpoints.remote.base_url", "localhost:8000/v1",
     ["localhost:8000/v1", "http://"]),
    ("nothing listens there", "llm.endpoints.remote.base_url", "http://127.0.0.1:9/v1",
     ["http://127.0.0.1:9/v1", "cannot reach", "llm.teacher"]),
    ("API key variable unset", "llm.endpoints.remote.api_key_env", "LIONFLOW_NO_SUCH_KEY",
     ["$LIONFLOW_NO_SUCH_KEY", "endpoint 'remote'"]),
    ("model not served", "llm.teacher.model", "gpt-9", ["llm.teacher.model='gpt-9'", "it serves"]),
    ("referee model not served", "llm.referee.model", "oracel", ["llm.referee.model='oracel'"]),
    ("budget without prices", "llm.budget_usd", 10, ["llm.prices", "llm.teacher.model='oracle'"]),
    ("unknown lm-eval task", "eval.lm_eval.tasks", ["oracel"], ["eval.lm_eval.tasks", "'oracel'"]),
    ("missing lm-eval include path", "eval.lm_eval.include_path", "resources/lm_evl",
     ["eval.lm_eval.include_path", "resources/lm_evl"]),
    ("missing local base model", "student.base_model", "models/no-such-model", ["student.base_model", "no such"]),
    ("missing gguf", "student.base_model", "models/nothing.gguf", ["student.base_model", "no such file"]),
    ("hub id not cached while offline", "student.base_model", "HuggingFaceTB/NoSuchModel-1M",
     ["student.base_model='HuggingFaceTB/NoSuchModel-1M'", "HF_HUB_OFFLINE"]),
    ("not a model id at all", "student.base_model", "my model!", ["student.base_model='my model!'"]),
    ("missing chat template", "student.chat_template", "templates/none.jinja", ["student.chat_template"]),
    ("effective batch not divisible", "student.train.effective_batch_size", 12,
     ["student.train.effective_batch_size=12", "per_device_batch_size=8"]),
    ("missing seed file", "data.seed_instructions", "data/seeds.jsonl", ["data.seed_instructions", "no such file"]),
    ("missing teacher prompt", "llm.teacher.prompt", "resources/prompts/teachr.yaml", ["llm.teacher.prompt", "no such"]),
    ("missing judge question file", "eval.judge.questions", "resources/demo/none.jsonl", ["eval.judge.questions"]),
    ("a sampling parameter typo", "llm.teacher.params", {"max_token": 64},
     ["llm.teacher.params.max_token", "not a parameter of the openai client", "did you mean max_tokens?"]),
    ("vLLM's top_k beside the client's parameters", "llm.referee.params", {"temperature": 0.2, "top_k": 20},
     ["llm.referee.params.top_k", "llm.referee.params.extra_body (extra_body: {top_k: 20})"]),
    ("vLLM's min_p for the generator", "llm.generator.params", {"min_p": 0.05}, ["llm.generator.params.min_p",
                                                                                "extra_body"]),
    ("vLLM's repetition_penalty for the judge", "eval.judge.params", {"repetition_penalty": 1.1},
     ["eval.judge.params.repetition_penalty", "extra_body"]),
    ("the model among the sampling parameters", "llm.teacher.params", {"model": "gpt-4o"},
     ["llm.teacher.params.model", "set by the stage"]),
    ("a refusal pattern that is not a regex", "llm.answer_checks.refusal_patterns", ["^I cannot (help"],
     ["llm.answer_checks.refusal_patterns[0]='^I cannot (help'", "not a regular expression"]),
    ("extra_body not a mapping", "llm.teacher.params", {"extra_body": "top_k=20"}, ["llm.teacher.params.extra_body"]),
    ("max_length shorter than template + longest seed + an answer", "student.train.max_length", 100,
     ["tests/micro/seed_instructions.jsonl:", "tokens in the student's prompt template",
      "leaving less than 16 tokens of student.train.max_length=100 for an answer"]),
]


@pytest.mark.parametrize("case, key, value, fragments", CONFIG_CASES,
                         ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_config_value_fails_before_paying_naming_its_key(base, server, case, key, value, fragments):
    before = paid(server)
    config = copy.deepcopy(base)
    set_key(config, key, value)
    message = problems_of(config)
    assert message is not None, f"{case}: accepted"
    for fragment in fragments:
        assert fragment in message, f"{case}: {fragment!r} not in:\n{message}"
    assert paid(server) == before, f"{case}: something was paid for"
    assert not Path("results").exists(), f"{case}: the check wrote results"
    assert problems_of(base) is None   # the fixed config passes, still without paying
    assert paid(server) == before


def test_a_budget_needs_a_price_for_every_role_judge_included(base, server):
    config = copy.deepcopy(base)
    config["eval"]["judge"] |= {"endpoint": "remote", "model": "judge-model"}
    config["llm"] |= {"budget_usd": 10, "prices": {"oracle": {"input_per_mtok": 1, "output_per_mtok": 2}}}
    message = problems_of(config)
    assert "eval.judge.model='judge-model'" in message and "llm.teacher" not in message
    config["llm"]["prices"]["judge-model"] = {"input_per_mtok": 3, "output_per_mtok": 6}
    assert problems_of(config) is None


def test_vllm_backend_names_its_command(base, tmp_path):
    config = copy.deepcopy(base)
    config["student"]["generate"] |= {"backend": "vllm", "vllm_command": str(tmp_path / "no-venv/bin/python -m vllm")}
    message = problems_of(config)
    assert "student.generate.vllm_command" in message and "no-venv" in message


def test_several_problems_are_reported_at_once(base, server):
    config = copy.deepcopy(base)
    config["llm"]["teacher"]["model"] = "gpt-9"
    config["student"]["base_model"] = "models/missing"
    config["eval"]["lm_eval"]["include_path"] = "nowhere"
    message = problems_of(config)
    assert all(k in message for k in ("llm.teacher.model", "student.base_model", "eval.lm_eval.include_path"))


# ----------------------------------------------------------------------------------- prompt files
PROMPT_CASES = [
    ("teacher ignores the instruction", "llm.teacher.prompt", "user: Answer the question well.\n",
     ["does not change with {{ instruction }}"]),
    ("referee not asked for score lines", "llm.referee.prompt",
     "user: 'Compare {{ answer_1 }} and {{ answer_2 }} for {{ instruction }}.'\n", ["score lines the parser reads"]),
    ("referee ignores the answers", "llm.referee.prompt",
     "user: 'Score them. Assistant 1: <score> Assistant 2: <score> {{ instruction }}'\n", ["{{ answer_1 }}"]),
    ("generator placeholder typo", "llm.generator.prompt_hard", "user: Write one like {{ instrction }}\n",
     ["instrction"]),
    ("YAML error names its line", "llm.generator.prompt_easy", "user: ok\nsystem: [unclosed\n",
     ["not valid YAML", "line"]),
    ("template syntax error names its line", "llm.teacher.prompt", "user: '{{ instruction '\n", ["template line 1"]),
    ("a prompt that is not a mapping of roles", "llm.teacher.prompt", "- just a list\n", []),
    ("teacher drops the input", "llm.teacher.prompt", "user: '{{ instruction }}'\n",
     ["does not change with {{ input }}", "sent without its input"]),
    ("generator drops the input", "llm.generator.prompt_easy", "user: 'Write a task like: {{ instruction }}'\n",
     ["does not change with {{ input }}"]),
    ("referee keeps the answer markers but asks for no score lines", "llm.referee.prompt",
     "user: \"{{ instruction }} {{ input }} [The Start of Assistant 1's Answer] {{ answer_1 }} [The End of Assistant 1's "
     "Answer] [The Start of Assistant 2's Answer] {{ answer_2 }} [The End of Assistant 2's Answer] Which assistant "
     "answered better, Assistant 1 or Assistant 2?\"\n", ["score lines the parser reads"]),
    ("judge asks for one score line only", "eval.judge.prompt",
     "user: '{{ instruction }} {{ input }} A: {{ answer_1 }} B: {{ answer_2 }} End with Assistant 1: <score>'\n",
     ["score lines the parser reads"]),
    ("an empty prompt file", "llm.teacher.prompt", "", []),
]


@pytest.mark.parametrize("case, key, text, fragments", PROMPT_CASES, ids=[c[0] for c in PROMPT_CASES])
def test_a_bad_prompt_fails_before_paying_naming_its_file(base, server, tmp_path, case, key, text, fragments):
    path = tmp_path / "prompt.yaml"
    path.write_text(text)
    config = copy.deepcopy(base)
    set_key(config, key, str(path))
    before = paid(server)
    message = problems_of(config)
    assert message is not None, f"{case}: accepted"
    for fragment in [key, str(path), *fragments]:
        assert fragment in message, f"{case}: {fragment!r} not in:\n{message}"
    assert paid(server) == before


def test_a_referee_template_without_score_lines_pays_nothing(base, server, tmp_path):
    """It used to pay the whole referee stage 1 + parse_retries times before failing."""
    path = tmp_path / "referee.yaml"
    path.write_text("user: 'Which is better for {{ instruction }}? {{ answer_1 }} / {{ answer_2 }}'\n")
    config = copy.deepcopy(base)
    config["llm"]["referee"]["prompt"] = str(path)
    before = paid(server)
    assert "score lines" in problems_of(config)
    assert paid(server) == before == paid(server)


def test_a_reference_prompt_without_the_input_fails_the_dry_run(base, server, tmp_path):
    path = tmp_path / "reference.yaml"
    path.write_text("user: 'Answer: {{ instruction }}'\n")
    config = copy.deepcopy(base)
    config["eval"]["judge"]["reference"] = {"endpoint": "remote", "model": "oracle", "prompt": str(path)}
    before = paid(server)
    message = problems_of(config)
    assert f"eval.judge.reference.prompt={str(path)!r}: the request does not change with {{{{ input }}}}" in message
    assert paid(server) == before


def test_server_only_parameters_reach_the_server_through_extra_body(base, server, tmp_path):
    """vLLM's top_k, min_p, repetition_penalty: under params.extra_body they pass the preflight and arrive in the
    request body itself."""
    config = copy.deepcopy(base)
    extra = {"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1}
    config["llm"]["teacher"]["params"] = {"temperature": 0.7, "max_tokens": 64, "extra_body": extra}
    assert problems_of(config) is None
    llm = make_llm(server.url, tmp_path / "cache", endpoint="remote", model="oracle", params={
        "max_tokens": 64, "extra_body": extra})
    before = len(server.log())
    [reply] = llm.complete([([{"role": "user", "content": "What is 2 plus 40?"}], {})])
    [entry] = server.log()[before:]
    assert entry["outcome"] == "ok" and set(extra) <= set(entry["fields"]) and "extra_body" not in entry["fields"]
    assert reply.content


def test_no_new_instructions_with_next_train_pool_new_fails_the_dry_run(base, server):
    config = copy.deepcopy(base)
    config["generation"] |= {"new_hard": 0, "new_easy": 0}
    config["pools"] = {"next_train_pool": "new"}
    message = problems_of(config)
    assert "generation.new_hard=0 and generation.new_easy=0 with pools.next_train_pool=new" in message
    config["iterations"] = 1
    assert problems_of(config) is None


def test_a_cache_dir_symlink_loop_is_named_at_preflight(base, server, tmp_path):
    (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
    (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
    config = copy.deepcopy(base)
    config["llm"]["cache_dir"] = str(tmp_path / "loop-a" / "llm")
    before = paid(server)
    message = problems_of(config)
    assert f"llm.cache_dir={str(tmp_path / 'loop-a' / 'llm')!r}: cannot be resolved" in message, message
    assert paid(server) == before
    # a symlink to a directory elsewhere is followed, and passes
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    config["llm"]["cache_dir"] = str(tmp_path / "link" / "llm")
    assert problems_of(config) is None


# ----------------------------------------------------------------------------------- seed files
def _seed_line(i: int, text: str = "Add 2 and 3.") -> str:
    return json.dumps({"id": f"s{i}", "instruction": text}) + "\n"


SEED_CASES = [
    ("a byte order mark", b"\xef\xbb\xbf" + _seed_line(1).encode(), ":1:", "byte order mark"),
    ("UTF-16", _seed_line(1).encode("utf-16"), ":1:", "UTF-16"),
    ("Latin-1 on line 2", _seed_line(1).encode() + b'{"id": "s2", "instruction": "caf\xe9 au lait"}\n', ":2:",
     "not UTF-8"),
    ("a JSON array", ("[" + _seed_line(1).strip() + "]\n").encode(), ":1:", "expected JSONL"),
    ("bad JSON on line 3", (_seed_line(1) + _seed_line(2) + '{"id": "s3", "instruction": }\n').encode(), ":3:",
     "not valid JSON"),
    ("a missing instruction", (_seed_line(1) + '{"id": "s2"}\n').encode(), ":2:", "instruction"),
    ("a duplicate key", b'{"id": "s1", "id": "s2", "instruction": "x y z w"}\n', ":1:", "duplicate key"),
    ("NaN", b'{"id": "s1", "instruction": "x", "score": NaN}\n', ":1:", "JSON"),
    ("an empty file", b"", "", "holds no instruction"),
    ("an instruction longer than the student's context",
     (_seed_line(1) + _seed_line(2) + _seed_line(3, "word " * 400)).encode(), ":3:", "instruction 's3' is"),
]


@pytest.mark.parametrize("case, data, where, fragment", SEED_CASES, ids=[c[0] for c in SEED_CASES])
def test_a_bad_seed_file_fails_naming_file_line_and_what_was_expected(base, server, tmp_path, case, data, where,
                                                                      fragment):
    path = tmp_path / "seeds.jsonl"
    path.write_bytes(data)
    config = copy.deepcopy(base)
    config["data"]["seed_instructions"] = str(path)
    before = paid(server)
    message = problems_of(config)
    assert message is not None, f"{case}: accepted"
    assert f"{path}{where}" in message and fragment in message, message
    assert paid(server) == before


def test_the_artifact_reader_words_the_same_errors():
    """Every JSONL reader of the run (not only the preflight) names the file, the line and what was expected."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lionflow-bom-{os.getpid()}.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _seed_line(1).encode())
    try:
        with pytest.raises(ArtifactError, match=f"{path}:1: .*byte order mark"):
            read_jsonl(path, "seed_instruction")
    finally:
        path.unlink()


# ----------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("remove, missing", [("*.safetensors", "no weights"), ("config.json", "no config.json"),
                                             ("tokenizer*", "no tokenizer")])
def test_a_damaged_checkpoint_is_named_with_how_to_rebuild_it(base, tmp_path, remove, missing):
    from lionflow.student.builtin import build_tiny_student

    ckpt = tmp_path / "results" / "bad-inputs" / "iter1" / "student"
    build_tiny_student(ckpt, seed=0, hidden_size=48, num_layers=1)
    assert problems_of(base) is None
    for path in ckpt.glob(remove):
        path.unlink()
    message = problems_of(base)
    assert f"results/bad-inputs/iter1/student: a damaged checkpoint ({missing}" in message
    assert "rm -r results/bad-inputs/iter1/student" in message and "train_student" in message


def test_a_cache_dir_that_cannot_be_created_is_named(base, tmp_path, server):
    (tmp_path / "afile").write_text("")
    config = copy.deepcopy(base)
    config["llm"]["cache_dir"] = str(tmp_path / "afile" / "cache")
    before = paid(server)
    message = problems_of(config)
    assert "llm.cache_dir" in message and "afile" in message
    assert paid(server) == before


# ----------------------------------------------------------------------------------- the response cache
N = 12


def _llm(server, cache_dir) -> LLM:
    return make_llm(server.url, cache_dir, endpoint="remote", model="oracle", params={"max_tokens": 64},
                    max_concurrency=2)


def _requests(n=N):
    return [([{"role": "user", "content": f"What is {i} plus 1?"}], {}) for i in range(n)]


def _answer_all(server, cache_dir):
    llm = _llm(server, cache_dir)
    results = llm.complete(_requests())
    assert all(not getattr(r, "error", None) for r in results)
    return llm


def test_an_unwritable_cache_pays_nothing(server, tmp_path):
    (tmp_path / "afile").write_text("")
    before = paid(server)
    with pytest.raises(CacheUnwritable, match=f"{tmp_path / 'afile' / 'cache'}.*nothing was sent"):
        _llm(server, tmp_path / "afile" / "cache")
    assert paid(server) == before


def test_an_answer_that_cannot_be_stored_stops_the_stage_and_the_rerun_pays_only_the_rest(server, tmp_path,
                                                                                        monkeypatch):
    """A disk that fills mid-stage: the stage stops before paying for more (only the requests already in
    flight are lost), and the rerun pays each request at most once more: never the stored ones."""
    writes = []
    real = ResponseCache._write

    def full_after_three(self, line):
        if len(writes) >= 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(line)
        real(self, line)

    monkeypatch.setattr(ResponseCache, "_write", full_after_three)
    before = paid(server)
    with pytest.raises(CacheUnwritable, match="No space left on device.*stops before paying for more"):
        _llm(server, tmp_path / "cache").complete(_requests())
    first = paid(server) - before
    assert first <= 3 + 2 + 1, first          # stored + in flight at the failure (max_concurrency 2) + the failed one
    monkeypatch.setattr(ResponseCache, "_write", real)
    llm = _answer_all(server, tmp_path / "cache")
    assert llm.stats.cache_hits == 3 and llm.stats.paid == N - 3
    assert paid(server) - before == first + N - 3
    assert _answer_all(server, tmp_path / "cache").stats.paid == 0


DAMAGE = [
    ("a torn JSON line", lambda lines: lines.__setitem__(4, b'{"key": "abc", "cont\n'), "not JSON"),
    ("bytes that are not UTF-8", lambda lines: lines.__setitem__(4, b'{"key": "caf\xe9"}\n'), "not UTF-8"),
    ("a record without a key", lambda lines: lines.__setitem__(4, b'{"content": "x"}\n'), "without a request key"),
    ("an answer that lost its content", lambda lines: lines.__setitem__(
        4, json.dumps({k: v for k, v in json.loads(lines[4]).items() if k != "content"}).encode() + b"\n"),
     "without content"),
    ("an answer cut short, its key intact", lambda lines: lines.__setitem__(4, lines[4][:120] + b"\n"), "not JSON"),
]


@pytest.mark.parametrize("case, damage, reason", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_cache_record_is_reported_and_paid_once_more_only(server, tmp_path, caplog, case, damage, reason):
    _answer_all(server, tmp_path / "cache")
    part = next((tmp_path / "cache").glob("part-*.jsonl"))
    lines = part.read_bytes().splitlines(keepends=True)
    damage(lines)
    part.write_bytes(b"".join(lines))
    before = paid(server)
    llm = _answer_all(server, tmp_path / "cache")
    assert f"{part}:5" in caplog.text and reason in caplog.text
    assert llm.stats.cache_damaged == 1 and f"{part}:5: " in llm.stats.warnings[0] and reason in llm.stats.warnings[0]
    assert paid(server) - before <= 1                       # the damaged answer, bought once more, said so
    assert _answer_all(server, tmp_path / "cache").stats.paid == 0
    assert paid(server) - before <= 1


def test_a_part_file_that_is_not_jsonl_is_named(server, tmp_path, caplog):
    _answer_all(server, tmp_path / "cache")
    junk = tmp_path / "cache" / "part-otherhost-1-abc.jsonl"
    junk.write_bytes("h\u00e9llo\n".encode("latin-1") + b"not json either\n")
    before = paid(server)
    llm = _answer_all(server, tmp_path / "cache")
    assert llm.stats.paid == 0 and paid(server) == before
    assert llm.stats.cache_damaged == 2
    assert f"{junk}:1: not UTF-8" in caplog.text and f"{junk}:2: not JSON" in caplog.text


# ----------------------------------------------------------------------------------- whole workflow
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("wf")
    for name in ("Snakefile", "rules", "workflow", "config", "resources", "tests"):
        (root / name).symlink_to(ROOT / name)
    return root


def _dry_run(workdir, config_text: str) -> subprocess.CompletedProcess:
    cfg = workdir / "user.yaml"
    cfg.write_text(config_text)
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--configfile", "tests/micro/config.yaml",
                           str(cfg)], cwd=workdir, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("case, text, fragments", [
    ("a seed file with a BOM, at parse time", "data: {seed_instructions: bom.jsonl}\n", ["bom.jsonl:1", "byte order mark"]),
    ("a typo inside a role", "llm: {teacher: {modle: gpt-4o}}\n", ["modle"]),
    ("an unknown lm-eval task", "eval: {lm_eval: {tasks: [oracle_gen, no_such_task]}}\n", ["no_such_task"]),
])
def test_snakemake_dry_run_reports_it(workdir, case, text, fragments):
    (workdir / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + _seed_line(1).encode())
    proc = _dry_run(workdir, text)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-2000:]
    for fragment in fragments:
        assert fragment in out, out[-3000:]
    assert not (workdir / "results").exists()
