"""Tab completion as bash does it: the code `basalt completion bash` prints,
sourced into a real bash, completes commands, subcommands and options."""

import os
import shutil
import subprocess
import sys

import pytest

BASALT = os.path.join(os.path.dirname(sys.executable), "basalt")


def complete(line: str) -> list[str]:
    """What bash offers after ``line`` (the cursor at its end)."""
    words = line.split(" ")
    script = f"""
set -e
eval "$({BASALT} completion bash)"
COMP_LINE='{line}'; COMP_POINT={len(line)}
COMP_WORDS=({' '.join(repr(w) for w in words)}); COMP_CWORD={len(words) - 1}
_python_argcomplete basalt
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    env = dict(os.environ, PATH=os.path.dirname(BASALT) + os.pathsep + os.environ["PATH"])
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return sorted(w.strip() for w in out.stdout.splitlines() if w.strip())


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_commands_actions_and_options():
    assert complete("basalt vol") == ["volume"]
    assert complete("basalt kms key r") == ["rotate"]
    assert "create" in complete("basalt volume ")
    assert "--master-key-file" in complete("basalt serve --mas")
    assert {"bash", "zsh"} <= set(complete("basalt completion "))


def test_zsh_code_registers_the_command():
    out = subprocess.run([BASALT, "completion", "zsh"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "compdef _python_argcomplete basalt" in out.stdout
