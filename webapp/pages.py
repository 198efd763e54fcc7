"""The browser page and the offline Swagger UI assets."""
from __future__ import annotations

from apiflask import APIFlask
from flask import Blueprint, current_app, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("pages", __name__)
DOCS_ASSETS = "/docs-assets"


@bp.get("/")
def index():
    return send_from_directory(current_app.static_folder, "index.html")


@bp.get(f"{DOCS_ASSETS}/<path:filename>")
def docs_asset(filename: str):
    return send_from_directory(swagger_ui_path, filename)


def use_local_docs_assets(app: APIFlask) -> None:
    """Swagger UI from the swagger-ui-bundle package, so /docs works with no internet."""
    app.config["SWAGGER_UI_CSS"] = f"{DOCS_ASSETS}/swagger-ui.css"
    app.config["SWAGGER_UI_BUNDLE_JS"] = f"{DOCS_ASSETS}/swagger-ui-bundle.js"
    app.config["SWAGGER_UI_STANDALONE_PRESET_JS"] = f"{DOCS_ASSETS}/swagger-ui-standalone-preset.js"
    app.config["DOCS_FAVICON"] = f"{DOCS_ASSETS}/favicon-32x32.png"
