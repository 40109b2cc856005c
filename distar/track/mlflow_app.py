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

And a shared runs view (a link's ``viewStateShareKey``, an experiment tag
``mlflow.sharedViewState.<key>``) holds only while its link's first page lasts: Back from a run
rebuilds the runs table from the browser's own saved view of the experiment, empty in a fresh
browser (no grouping, default columns). Where that slot is empty, or still holds the view this
page put there (a later link, another sweep's view, replaces it), the page copies the shared
view into it, so Back returns to the view the link opened; a view the user saved or changed
stays theirs.
"""

from __future__ import annotations

import json
from pathlib import Path

# localStorage key -> the value MLflow's UI stores (JSON), set when the key is absent
UI_DEFAULTS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
}
# MLflow 3.17's saved view of an experiment's runs page: localStorage PREFIX + the JSON list of
# its experiment ids + SUFFIX (its LocalStorageStore, version 1.1, component "ExperimentPage")
SAVED_VIEW = ("MLflowLocalStorage-1.1-ExperimentPage-", "-ReactComponentState")
SET_DEFAULTS = r"""(function(){var d=DEFAULTS;
for(var k in d){if(localStorage.getItem(k)===null){localStorage.setItem(k,JSON.stringify(d[k]));}}
})();""".replace("DEFAULTS", json.dumps(UI_DEFAULTS))
SEED_SAVED_VIEW = r"""(function(){
var m=location.hash.match(/^#\/experiments\/([^\/?]+)[^?]*\?(.*)$/);if(!m)return;
var key=new URLSearchParams(m[2]).get('viewStateShareKey');if(!key)return;
var id=decodeURIComponent(m[1]);var slot=PREFIX+JSON.stringify([id])+SUFFIX;
var mine='distar.seededView_'+id;var ours=function(){var v=localStorage.getItem(slot);
 return v===null||v===localStorage.getItem(mine);};
if(!ours())return;
fetch('ajax-api/2.0/mlflow/experiments/get?experiment_id='+encodeURIComponent(id))
.then(function(r){return r.json();}).then(function(j){
 var t=((j.experiment||{}).tags||[]).filter(function(x){
  return x.key==='mlflow.sharedViewState.'+key;})[0];if(!t)return;
 var s=JSON.parse(t.value);if(typeof s.state==='string'){s=JSON.parse(s.state);}
 if(ours()){var v=JSON.stringify(s);localStorage.setItem(slot,v);localStorage.setItem(mine,v);}
}).catch(function(){});
})();""".replace("PREFIX", json.dumps(SAVED_VIEW[0])).replace("SUFFIX", json.dumps(SAVED_VIEW[1]))
# each in its own try: a default that fails must never break MLflow's own page
SCRIPT = "".join(
    f"<script>try{{{js}}}catch(e){{}}</script>" for js in (SET_DEFAULTS, SEED_SAVED_VIEW)
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
        return Response(
            index_html(app.static_folder),
            mimetype="text/html",
            headers={"Cache-Control": "no-cache"},
        )

    app.view_functions["serve"] = serve
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import create_fastapi_app

        return create_fastapi_app(app)
    return app
