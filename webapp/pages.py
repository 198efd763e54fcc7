"""The browser page and the offline Swagger UI assets."""
from __future__ import annotations

from importlib.resources import files

from apiflask import APIFlask
from flask import Blueprint, current_app, send_from_directory

bp = Blueprint("pages", __name__)
DOCS_ASSETS = "/docs-assets"
# Swagger UI 5 (it reads OpenAPI 3.1), as shipped inside the flask-swagger-ui package.
SWAGGER_UI_DIST = str(files("flask_swagger_ui") / "dist")


@bp.get("/")
def index():
    return send_from_directory(current_app.static_folder, "index.html")


@bp.get("/favicon.ico")
def favicon():
    """For browsers that ask there whatever the page names (the page names the same icon)."""
    return send_from_directory(current_app.static_folder, "favicon.svg")


@bp.get(f"{DOCS_ASSETS}/<path:filename>")
def docs_asset(filename: str):
    return send_from_directory(SWAGGER_UI_DIST, filename)


def use_local_docs_assets(app: APIFlask) -> None:
    """APIFlask's /docs page with Swagger UI served from here, so it works with no internet."""
    app.config["SWAGGER_UI_CSS"] = f"{DOCS_ASSETS}/swagger-ui.css"
    app.config["SWAGGER_UI_BUNDLE_JS"] = f"{DOCS_ASSETS}/swagger-ui-bundle.js"
    app.config["SWAGGER_UI_STANDALONE_PRESET_JS"] = f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js"
    app.config["DOCS_FAVICON"] = f"{DOCS_ASSETS}/favicon-32x32.png"
    app.config["SWAGGER_UI_CONFIG"] = {"validatorUrl": None}  # its badge would call an outside service
