"""MLflow's own tracking server and UI, opening in the training layout: ``mlflow server
--app-name distar ...`` (an ``mlflow.app`` plugin, MLflow's extension point for servers, as its
``basic-auth`` is).

Why: MLflow 3.17's UI picks its layout from the ``workflowType`` URL parameter, else from the
browser's localStorage (``mlflow.workflowType_v1``), else the GenAI layout (Traces, Judges,
"Evaluation runs"). The experiment tag ``mlflow.experimentKind`` is not read for it, and the
run links of its runs table carry no ``workflowType``: one click from the training view of a
fresh browser opens the run in the GenAI layout. The Assistant panel opens by itself on a
fresh browser's first visit to a local server (localStorage
``mlflow.assistant.fab.autoOpenedOnFirstLoad_v1``). The page this app serves sets those two
keys to the training layout and "already opened" -- only where the browser has no value yet,
so a layout or panel a user chooses in the UI stays theirs.
"""

from __future__ import annotations

import json
from pathlib import Path

# localStorage key -> the value MLflow's UI stores (JSON), set when the key is absent
UI_DEFAULTS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
}
SCRIPT = (
    "<script>(function(){var d=" + json.dumps(UI_DEFAULTS) + ";try{for(var k in d){"
    "if(localStorage.getItem(k)===null){localStorage.setItem(k,JSON.stringify(d[k]));}}}"
    "catch(e){}})();</script>"
)


def index_html(static_folder: str) -> str:
    """MLflow's ``index.html`` with :data:`SCRIPT` first in its head (before the app's code)."""
    html = (Path(static_folder) / "index.html").read_text(encoding="utf-8")
    if "<head>" not in html:
        raise RuntimeError(f"{static_folder}/index.html has no <head>: MLflow's page changed")
    return html.replace("<head>", "<head>" + SCRIPT, 1)


def create_app():
    """MLflow's server app (FastAPI under uvicorn, MLflow's default; Flask otherwise) with its
    page view serving :func:`index_html`."""
    from flask import Response
    from mlflow.environment_variables import _MLFLOW_SGI_NAME  # set by `mlflow server`
    from mlflow.server import app

    def serve():
        return Response(index_html(app.static_folder), mimetype="text/html",
                        headers={"Cache-Control": "no-cache"})  # fmt: skip

    app.view_functions["serve"] = serve
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app
