"""The OpenAPI 3.1 document of the REST API, built from the msgspec wire types (pure).

Written out rather than inferred from the handlers: the handlers decode bodies themselves (to
answer in FastAPI's error shape), so only this table can say what they accept and return.
"""

from __future__ import annotations

from typing import Any

import msgspec

from services.gateway.core import wire
from services.gateway.core.validation import MAX_BODY_BYTES, SubmitRequest, TokenRequest
from shared.rpc import RebuildReport

REF = "#/components/schemas/{name}"
ERRORS = {
    "401": ("Missing, unknown or revoked token", wire.ErrorBody),
    "403": ("The token's account may not do this", wire.ErrorBody),
    "422": ("Validation failed (FastAPI's shape)", wire.ValidationErrorBody),
    "503": ("A service this request needs is down", wire.ErrorBody),
}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"},
          "description": "decimal job id"}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


# (method, path, summary, parameters, request body type, success status, success type, extra statuses)
ROUTES: list[tuple[str, str, str, list[dict], type | None, str, type, tuple[str, ...]]] = [
    ("post", "/jobs/submit", "Submit a job", [
        {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
         "description": "the same key returns the same job_id and creates nothing new"},
    ], SubmitRequest, "201", wire.SubmitResponse, ("401", "403", "422", "503")),
    ("get", "/jobs/query/{job_id}", "A job's state, times, logs and details", [JOB_ID], None, "200",
     wire.QueryResponse, ("401", "403", "404", "422", "503")),
    ("post", "/jobs/cancel/{job_id}", "Cancel a job (idempotent)", [JOB_ID], None, "200", wire.CancelResponse,
     ("401", "403", "404", "422", "503")),
    ("get", "/jobs", "List jobs, newest first", [
        _query("state", {"type": "string"}, "PENDING, RUNNING, COMPLETED, ..."),
        _query("account", {"type": "string"}, "only this account's jobs"),
        _query("partition", {"type": "string"}, "only this partition's jobs"),
        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "page size"),
        _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
    ], None, "200", wire.JobList, ("401", "403", "422", "503")),
    ("get", "/jobs/{job_id}/events", "A job's history from the event log", [JOB_ID], None, "200", wire.JobEvents,
     ("401", "403", "404", "422", "503")),
    ("get", "/nodes", "Executor nodes (sinfo)", [], None, "200", wire.NodeList, ("401", "503")),
    ("get", "/dashboard", "Counts, capacity, running and pending jobs", [], None, "200", wire.Dashboard,
     ("401", "503")),
    ("get", "/health", "Checks NATS, PostgreSQL and the projection lag", [], None, "200", wire.Health, ("503",)),
    ("get", "/", "Service name and version", [], None, "200", wire.About, ()),
    ("post", "/admin/tokens", "Create an API token (admin)", [], TokenRequest, "201", wire.TokenCreated,
     ("401", "403", "409", "422", "503")),
    ("get", "/admin/tokens", "List API tokens, without secrets (admin)", [], None, "200", wire.TokenList,
     ("401", "403", "503")),
    ("post", "/admin/nodes/{name}/drain", "Drain a node: no new jobs, running ones finish (admin)", [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
    ], None, "200", wire.CancelResponse, ("401", "403", "404", "503")),
    ("post", "/admin/nodes/{name}/resume", "Put a drained node back into service (admin)", [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
    ], None, "200", wire.CancelResponse, ("401", "403", "404", "503")),
    ("post", "/admin/rebuild", "Rebuild the read model from the event log (admin)", [], None, "200",
     RebuildReport, ("401", "403", "500", "503")),
    ("delete", "/admin/tokens/{name}", "Revoke an API token (admin)", [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
    ], None, "200", wire.CancelResponse, ("401", "403", "404", "503")),
]
PUBLIC = {"/health", "/"}
NOT_RATE_LIMITED = {"/health"}


def openapi_document(version: str) -> dict[str, Any]:
    types = {SubmitRequest, TokenRequest, wire.ErrorBody, wire.ValidationErrorBody}
    types |= {route[6] for route in ROUTES}
    _, components = msgspec.json.schema_components(sorted(types, key=lambda t: t.__name__), ref_template=REF)
    paths: dict[str, dict] = {}
    for method, path, summary, parameters, body, status, result, errors in ROUTES:
        responses = {status: _response(summary, result)}
        for code in errors:
            if code == "404":
                responses[code] = _response("Not found", wire.ErrorBody)
            elif code == "409":
                responses[code] = _response("Conflict", wire.ErrorBody)
            elif code == "500":
                responses[code] = _response("The rebuild failed (the report says why)", RebuildReport)
            else:
                description, error_type = ERRORS[code]
                responses[code] = _response(description, error_type)
        if body is not None:
            responses["413"] = _response(f"The body is over {MAX_BODY_BYTES // 2**20} MiB", wire.ErrorBody)
        if path not in NOT_RATE_LIMITED:
            responses["429"] = _response("Too many requests: this token's (or address's) rate limit is used up",
                                         wire.ErrorBody, {"Retry-After": {"schema": {"type": "string"},
                                                                          "description": "seconds to wait"}})
        operation: dict[str, Any] = {"summary": summary, "parameters": parameters, "responses": responses}
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"$ref": REF.format(name=body.__name__)}}}}
        if path in PUBLIC:
            operation["security"] = []
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "SCNS-Conductor API", "version": version},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


def _response(description: str, result: type, headers: dict[str, dict] | None = None) -> dict:
    return {"description": description, "headers": {
        "X-Request-ID": {"schema": {"type": "string"}},
        "X-Process-Time": {"schema": {"type": "string"}},
        **(headers or {}),
    }, "content": {"application/json": {"schema": {"$ref": REF.format(name=result.__name__)}}}}
