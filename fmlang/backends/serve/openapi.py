"""The server's OpenAPI document (`GET /openapi.json`): FastAPI's, with each POST route's
request body described by its protocol model. The handlers read and validate their bodies
themselves (to bound them while reading), so FastAPI cannot see the models on its own."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def describe_bodies(app: FastAPI, bodies: dict[str, type[BaseModel]]) -> None:
    """Make `app.openapi()` name `bodies[path]` as the JSON request body of POST `path`."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        document = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for path, model in bodies.items():
            schema = model.model_json_schema(ref_template=REF)
            schemas.update(schema.pop("$defs", {}))
            schemas[model.__name__] = schema
            content = {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}
            document["paths"][path]["post"]["requestBody"] = {"required": True, "content": content}
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
