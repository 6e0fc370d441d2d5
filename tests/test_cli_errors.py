"""The launchers refuse bad input with one line `error: ...` on stderr and a non-zero exit (2 for
usage and config errors), never a traceback unless --debug is given; --help exits 0."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLIS = ("train", "generate", "evaluate", "translate")
GPT_TINY = os.path.join("experiments", "configs", "gpt_tiny.py")


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=_env(),
                          cwd=REPO, timeout=300)


def _cli(name: str, *args: str) -> subprocess.CompletedProcess:
    return _run("-m", f"experiments.{name}", *args)


def _assert_one_line_error(out: subprocess.CompletedProcess, returncode: int, *fragments: str):
    lines = out.stderr.strip().splitlines()
    assert out.returncode == returncode, out.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("name", CLIS)
def test_help_exits_zero(name):
    out = _cli(name, "--help")
    assert out.returncode == 0, out.stderr
    assert "--workdir" in out.stdout and out.stderr == ""


@pytest.mark.parametrize("args,fragments", [
    ((f"--config={os.path.join('experiments', 'configs', 'nope.py')}",),
     ("nope.py' does not exist", "gpt_tiny.py")),
    ((f"--config={GPT_TINY}:bogus",), ("unknown config argument 'bogus'", "'runlocal'")),
    ((f"--config={GPT_TINY}", "--config.hiden_size=3"), ("unknown config key 'hiden_size'",)),
    ((f"--config={GPT_TINY}", "--config.num_train_steps=abc"), ("--config.num_train_steps",)),
    ((f"--config={GPT_TINY}", "--config.model.num_layers=2"),
     ("config.model is a value ('gpt_tiny')", "did you mean --config.num_layers?")),
    ((f"--config={GPT_TINY}", "--config.mesh.dta=2"),
     ("unknown config key 'mesh.dta'", "Did you mean --config.mesh.data?", "data, fsdp, tensor")),
    ((f"--config={GPT_TINY}", "--config.mesh.data.x=2"),
     ("config.mesh.data is a value (-1)", "Valid keys of config.mesh in")),
], ids=["missing_file", "bogus_arg", "unknown_key", "unparsable_value", "key_under_a_value",
        "unknown_nested_key", "key_under_a_nested_value"])
def test_train_refuses_a_bad_config_before_starting(tmp_path, args, fragments):
    workdir = tmp_path / "run"
    out = _cli("train", *args, "--workdir", str(workdir))
    _assert_one_line_error(out, 2, *fragments)
    assert not workdir.exists()


def test_train_refuses_an_out_of_range_value_without_creating_the_workdir(tmp_path):
    workdir = tmp_path / "run"
    out = _cli("train", f"--config={GPT_TINY}:runlocal", "--workdir", str(workdir),
               "--config.num_train_steps=-5")
    _assert_one_line_error(out, 2, "num_train_steps must be an integer > 0; got -5")
    assert not workdir.exists()


@pytest.mark.skipif(os.environ.get("JAX_PLATFORMS", "cpu") != "cpu", reason="a CPU's kernels")
@pytest.mark.parametrize("config,key,value,needs,fix", [
    (GPT_TINY, "attention_implementation", "cudnn", "an NVIDIA GPU",
     "--config.attention_implementation=xla"),
    (GPT_TINY, "attention_implementation", "pallas", "a TPU",
     "--config.attention_implementation=xla"),
    (os.path.join("experiments", "configs", "lstm_char.py"), "rnn_implementation", "cudnn",
     "an NVIDIA GPU", "--config.rnn_implementation=scan"),
])
def test_kernels_this_platform_lacks_are_refused_before_the_run(tmp_path, config, key, value,
                                                                needs, fix):
    workdir = tmp_path / "run"
    out = _cli("train", f"--config={config}:runlocal", "--workdir", str(workdir),
               f"--config.{key}={value}")
    _assert_one_line_error(out, 2, f"config.{key}='{value}' needs {needs}",
                           "platform here is 'cpu'", fix)
    assert not workdir.exists()


def test_an_embedded_dataset_of_another_task_is_named_as_such(tmp_path):
    out = _cli("train", f"--config={GPT_TINY}:runlocal", "--workdir", str(tmp_path / "run"),
               "--config.dataset=zoo_code_tags")
    _assert_one_line_error(out, 2, "'zoo_code_tags' is the zoo's embedded dataset for tagging",
                           "use --config.dataset=zoo_text")


def test_a_missing_flag_is_named():
    _assert_one_line_error(_cli("train", f"--config={GPT_TINY}"), 2, "--workdir is required")


@pytest.mark.parametrize("name,args", [
    ("generate", ("--prompt", "x")),
    ("evaluate", ()),
    ("translate", ("some text",)),
])
def test_reading_a_missing_workdir_says_so_and_creates_nothing(tmp_path, name, args):
    workdir = tmp_path / "missing" / "run"
    out = _cli(name, "--workdir", str(workdir), *args)
    _assert_one_line_error(out, 1, f"workdir '{workdir}' does not exist",
                           "python -m experiments.train")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("args,fragments", [
    (("--max_new_tokens", "-3"), ("--max_new_tokens=-3", "not a positive integer")),
    (("--num_samples", "0"), ("--num_samples=0", "not a positive integer")),
    (("--temperature", "nan"), ("--temperature=nan", "finite")),
    (("--seed", str(2**64)), (f"--seed={2**64}", "[0, 4294967295]")),
    (("--top_p", "0"), ("--top_p=0", "(0, 1]")),
    (("--temperature", "-1"), ("--temperature=-1", "non-negative")),
    (("--top_k", "-2"), ("--top_k=-2", "non-negative")),
])
def test_generate_refuses_out_of_range_flags(tmp_path, args, fragments):
    _assert_one_line_error(_cli("generate", "--workdir", str(tmp_path), *args), 2, *fragments)


def test_debug_shows_the_traceback(tmp_path):
    out = _cli("generate", "--workdir", str(tmp_path / "missing"), "--debug")
    assert out.returncode != 0
    assert "Traceback" in out.stderr and "WorkdirError" in out.stderr
    assert not (tmp_path / "missing").exists()


def test_os_errors_are_one_line_and_debug_reraises():
    """A full disk (or any OSError) in a launcher's main: one line, exit 1; --debug: traceback."""
    script = ("import errno, sys\n"
              "from experiments import cli\n"
              "def main(argv):\n"
              "    raise OSError(errno.ENOSPC, 'No space left on device', '/full/run')\n"
              "cli.run(main)\n")
    out = _run("-c", script)
    _assert_one_line_error(out, 1, "No space left on device", "/full/run")
    out = _run("-c", script, "--debug")
    assert out.returncode == 1 and "Traceback" in out.stderr and "OSError" in out.stderr


def test_out_of_memory_is_one_line_naming_what_to_lower():
    script = ("from experiments import cli\n"
              "class JaxRuntimeError(RuntimeError):\n"
              "    pass\n"
              "def main(argv):\n"
              "    raise JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 59405381184 "
              "bytes.\\nmore detail')\n"
              "cli.run(main)\n")
    _assert_one_line_error(_run("-c", script), 1, "out of memory", "59405381184 bytes",
                           "lower the batch size")


def test_an_empty_workdir_is_refused_and_nothing_is_written(tmp_path):
    out = subprocess.run([sys.executable, "-m", "experiments.train",
                          f"--config={os.path.join(REPO, GPT_TINY)}", "--workdir="], capture_output=True, text=True, env=_env(),
                         cwd=tmp_path, timeout=300)
    _assert_one_line_error(out, 2, "--workdir is empty")
    assert list(tmp_path.iterdir()) == []


def test_final_report_says_above_when_the_loss_exceeds_the_entropy():
    script = ("from experiments.train import final_report\n"
              "print(final_report({'loss': 4.0}, {'unigram_entropy': 5.0}))\n"
              "print(final_report({'loss': 6.0}, {'unigram_entropy': 5.0}))\n")
    out = _run("-c", script)
    assert out.returncode == 0, out.stderr
    below, above = out.stdout.strip().splitlines()
    assert below.endswith("(20.0% below)") and above.endswith("(20.0% above)")
