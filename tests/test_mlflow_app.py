"""``mlflow server --app-name distar`` (distar/track/mlflow_app.py) without a browser: the plugin is
registered where MLflow looks for it, the page it serves sets the UI's defaults before MLflow's
own code runs, and the localStorage keys it sets are the ones this MLflow's UI reads (an MLflow
upgrade that renames them fails here, not silently in a user's browser). The browser test
(tests/test_mlflow_ui.py) clicks through the UI it serves."""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from pathlib import Path

from distar.track import mlflow_app


def static_folder() -> Path:
    import mlflow

    return Path(mlflow.__file__).parent / "server" / "js" / "build"


def test_the_plugin_is_registered_where_mlflow_server_finds_it():
    from mlflow.utils.plugins import get_entry_points

    (ours,) = [e for e in get_entry_points("mlflow.app") if e.name == "distar"]
    assert ours.load() is mlflow_app.create_app
    assert "distar" in {e.name for e in entry_points(group="mlflow.app")}


def test_the_page_sets_the_defaults_before_mlflows_code_runs():
    html = mlflow_app.index_html(str(static_folder()))
    assert html.index("<script") == html.index(mlflow_app.SCRIPT) < html.index("</head>")
    # only where the browser has no value: a layout the user picks stays theirs
    assert "if(localStorage.getItem(k)===null)" in mlflow_app.SCRIPT
    stock = (static_folder() / "index.html").read_text()
    assert html.replace(mlflow_app.SCRIPT, "") == stock


def test_the_keys_set_are_the_ones_this_mlflows_ui_reads():
    """MLflow's UI stores ``key`` with ``version`` under ``{key}_v{version}`` (its
    useLocalStorage hook); each default must name a key and version the bundle declares, and a
    value it understands."""
    bundle = "".join(
        p.read_text(errors="ignore") for p in (static_folder() / "static" / "js").glob("*.js")
    )
    assert "`${e}_v${t}`" in bundle  # the hook's storage name
    for stored in mlflow_app.UI_DEFAULTS:
        key, version = re.fullmatch(r"(.+)_v(\d+)", stored).groups()
        assert f'key:"{key}",version:{version}' in bundle, stored
    assert 'MACHINE_LEARNING="machine_learning"' in bundle
    # the saved view of an experiment's runs page: LocalStorageStore's key, built as
    # MLflowLocalStorage-<version>-<component>-<scope>-ReactComponentState
    prefix, suffix = mlflow_app.SAVED_VIEW
    _, version, component, _ = prefix.split("-")
    for fragment in (
        '["MLflowLocalStorage",r.version,this.scope,e].join("-")',
        f'version="{version}"',
        f'getStoreForComponent("{component}",',
        f'reactComponentStateKey="{suffix.removeprefix("-")}"',
    ):
        assert fragment in bundle, fragment
