"""The endpoint's OpenAPI description (served at /openapi.json; schemathesis tests against it)."""

from __future__ import annotations

from nerops.serving.scoring import Limits

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
ENTITY = {
    "type": "object",
    "required": ["label", "start", "end", "text"],
    "properties": {
        "label": {"type": "string"},
        "start": {"type": "integer", "minimum": 0},
        "end": {"type": "integer", "minimum": 0},
        "text": {"type": "string"},
    },
}


def spec(endpoint: str, limits: Limits = Limits()) -> dict[str, object]:
    text = {"type": "string", "minLength": 1, "maxLength": limits.max_text_chars}
    request = {
        "oneOf": [
            {"type": "object", "required": ["text"], "properties": {"text": text}, "additionalProperties": False},
            {
                "type": "object",
                "required": ["documents"],
                "properties": {
                    "documents": {"type": "array", "items": text, "minItems": 1, "maxItems": limits.max_documents}
                },
                "additionalProperties": False,
            },
        ]
    }
    answer = {
        "type": "object",
        "required": ["model_version", "deployment"],
        "properties": {
            "entities": {"type": "array", "items": ENTITY},
            "documents": {
                "type": "array",
                "items": {"type": "object", "properties": {"entities": {"type": "array", "items": ENTITY}}},
            },
            "model_version": {"type": "string"},
            "deployment": {"type": "string"},
        },
    }

    def error_response(description: str) -> dict[str, object]:
        return {"description": description, "content": {"application/json": {"schema": ERROR}}}

    return {
        "openapi": "3.0.3",
        "info": {"title": f"nerops online endpoint {endpoint}", "version": "1"},
        "components": {"securitySchemes": {"key": {"type": "http", "scheme": "bearer"}}},
        "security": [{"key": []}],
        "paths": {
            "/score": {
                "post": {
                    "summary": "Extract entities from one CV or a batch",
                    "parameters": [
                        {
                            "name": "azureml-model-deployment",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "Send the request to this deployment, outside the traffic split.",
                        }
                    ],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
                    "responses": {
                        "200": {"description": "Entities", "content": {"application/json": {"schema": answer}}},
                        "400": error_response("Invalid JSON, invalid UTF-8 or an empty body"),
                        "401": error_response("Missing or wrong key"),
                        "404": error_response("Unknown pinned deployment"),
                        "413": error_response("Body over the size limit"),
                        "415": error_response("Wrong content type"),
                        "422": error_response("Valid JSON with the wrong shape"),
                        "502": error_response("The deployment failed to answer"),
                        "503": error_response("No deployment takes traffic, or all are busy"),
                        "504": error_response("The deployment did not answer in time"),
                    },
                }
            },
            "/health": {"get": {"security": [], "responses": {"200": {"description": "The endpoint is up"}}}},
        },
    }
