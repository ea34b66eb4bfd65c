import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```(?:bash|sh)\n(.*?)\n```", readme, flags=re.S)
    test_cmd = next(c for c in commands if "pytest" in c)
    assert test_cmd in (ROOT / ".ci" / "run").read_text().splitlines()
    app_cmd = next(c for c in commands if "streamlit run streamlit_app.py" in c)
    assert app_cmd.startswith("pip install -r requirements.txt")


def test_requirements_pin_cpu_torch_and_no_torchvision():
    req = (ROOT / "requirements.txt").read_text()
    assert "torch==2.13.0" in req and "torchvision" not in req
    pins = [l for l in req.splitlines() if l and not l.startswith("#")]
    assert all("==" in l for l in pins), pins
