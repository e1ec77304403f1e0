"""Where the project's own files live (templates, static, migrations), not user data."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
ALEMBIC_INI = ROOT / "alembic.ini"
