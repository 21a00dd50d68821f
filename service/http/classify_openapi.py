"""The OpenAPI schemas of the classify APIs (http/classify.py), as those servers document them:
vLLM's /v1/classify, Infinity's /classify, text-embeddings-inference's /predict, /tokenize, /info and
/health, and the Inference API's text-classification task at /."""

from __future__ import annotations

from typing import Any

SCORE_FUNCTIONS = ("softmax", "sigmoid", "none")  # the Inference API's function_to_apply

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
TEXTS = {"oneOf": [STRING, {"type": "array", "items": STRING, "minItems": 1}]}


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def classify_schemas() -> dict[str, Any]:
    usage = {"prompt_tokens": INTEGER, "total_tokens": INTEGER}
    labelled = _object({"label": STRING, "score": {"type": "number"}}, ("label", "score"))
    one_text = {"type": "array", "items": STRING, "minItems": 1, "maxItems": 1}
    return {
        "VllmClassifyRequest": _object(
            {
                "model": STRING,
                "input": TEXTS,
                "truncate_prompt_tokens": {**INTEGER, "description": "-1 or left out: the model's window"},
                "user": STRING,
                "priority": {**INTEGER, "description": "below 0: high, 0: normal (the default), above: low"},
            },
            ("input",),
        ),
        "VllmClassifyResponse": _object(
            {
                "id": STRING,
                "object": {"const": "list"},
                "created": INTEGER,
                "model": STRING,
                "data": _list(
                    _object(
                        {
                            "index": INTEGER,
                            "label": STRING,
                            "probs": _list({"type": "number"}),
                            "num_classes": INTEGER,
                        }
                    )
                ),
                "usage": _object(
                    {**usage, "completion_tokens": INTEGER, "prompt_tokens_details": {"type": "null"}}
                ),
            }
        ),
        "OpenAIModels": _object(
            {
                "object": {"const": "list"},
                "data": _list(
                    _object(
                        {
                            "id": STRING,
                            "object": {"const": "model"},
                            "created": INTEGER,
                            "owned_by": STRING,
                            "max_model_len": INTEGER,
                        }
                    )
                ),
            }
        ),
        "OpenAIError": _object(
            {
                "error": _object(
                    {
                        "message": STRING,
                        "type": STRING,
                        "param": {"type": ["string", "null"]},
                        "code": INTEGER,
                    }
                )
            },
            ("error",),
        ),
        "InfinityClassifyRequest": _object(
            {"model": STRING, "input": TEXTS, "raw_scores": {**BOOLEAN, "description": "logits"}},
            ("input",),
        ),
        "InfinityClassifyResponse": _object(
            {
                "object": {"const": "classify"},
                "data": _list(_list(_ref("LabelScore"))),
                "model": STRING,
                "usage": _object(usage),
                "id": STRING,
                "created": INTEGER,
            }
        ),
        "LabelScore": labelled,
        "TeiPredictRequest": _object(
            {
                "inputs": {
                    "oneOf": [STRING, one_text, {"type": "array", "items": one_text, "minItems": 1}],
                    "description": 'one text ("text" or ["text"]), or a batch [["text"], ["text"]]',
                },
                "truncate": {
                    **BOOLEAN,
                    "description": "false: a text over max_input_length is read whole, in windows; "
                    "left out: as auto_truncate says",
                },
                "raw_scores": {**BOOLEAN, "description": "logits instead of probabilities"},
                "truncation_direction": {"enum": ["Right"]},
            },
            ("inputs",),
        ),
        "TeiPredictResponse": {
            "oneOf": [_list(_ref("LabelScore")), _list(_list(_ref("LabelScore")))],
            "description": "one text: its labels by score; a batch: a list of those",
        },
        "TeiTokenizeRequest": _object({"inputs": TEXTS, "add_special_tokens": BOOLEAN}, ("inputs",)),
        "TeiToken": _object(
            {
                "id": INTEGER,
                "text": STRING,
                "special": BOOLEAN,
                "start": {"type": ["integer", "null"], "description": "character offset in the text"},
                "stop": {"type": ["integer", "null"]},
            }
        ),
        "TeiInfo": _object(
            {
                "model_id": STRING,
                "model_sha": {"type": ["string", "null"]},
                "model_dtype": STRING,
                "model_type": _object(
                    {
                        "classifier": _object(
                            {
                                "id2label": {"type": "object", "additionalProperties": STRING},
                                "label2id": {"type": "object", "additionalProperties": INTEGER},
                            }
                        )
                    }
                ),
                "max_input_length": INTEGER,
                "max_client_batch_size": INTEGER,
                "auto_truncate": BOOLEAN,
                "tokenization_workers": INTEGER,
                "version": STRING,
                "sha": {"type": ["string", "null"]},
                "docker_label": {"type": ["string", "null"]},
                "model_version": INTEGER,
            }
        ),
        "TeiError": _object(
            {
                "error": STRING,
                "error_type": {
                    "enum": ["Validation", "Overloaded", "Unhealthy", "Backend", "Unauthorized"],
                },
            },
            ("error", "error_type"),
        ),
        "TaskRequest": _object(
            {
                "inputs": TEXTS,
                "parameters": _object(
                    {"function_to_apply": {"enum": list(SCORE_FUNCTIONS)}, "top_k": {**INTEGER, "minimum": 1}}
                ),
            },
            ("inputs",),
        ),
    }


def classify_paths(operation: Any) -> dict[str, dict[str, Any]]:
    """The paths of the classify APIs; operation(summary, ok, body, error): an operation whose errors
    have the schema named `error`."""

    def json(name: str) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": _ref(name)}}}

    def schema(value: dict[str, Any]) -> dict[str, Any]:
        return {"content": {"application/json": {"schema": value}}}

    return {
        "/v1/classify": {
            "post": operation(
                "vLLM's and SGLang's classify API: each text's label and probabilities, tokens counted",
                json("VllmClassifyResponse"),
                json("VllmClassifyRequest"),
                "OpenAIError",
            )
        },
        "/v1/models": {
            "get": operation(
                "OpenAI's model list, as vLLM serves it: the one model served here",
                json("OpenAIModels"),
                None,
                "OpenAIError",
            )
        },
        "/classify": {
            "post": operation(
                "Infinity's classify API: each text's labels by score",
                json("InfinityClassifyResponse"),
                json("InfinityClassifyRequest"),
                "OpenAIError",
            )
        },
        "/predict": {
            "post": operation(
                "text-embeddings-inference's predict API: labels by score, for one text or a batch",
                json("TeiPredictResponse"),
                json("TeiPredictRequest"),
                "TeiError",
            )
        },
        "/tokenize": {
            "post": operation(
                "text-embeddings-inference's tokenize API: every token of each text, with its offsets",
                schema(_list(_list(_ref("TeiToken")))),
                json("TeiTokenizeRequest"),
                "TeiError",
            )
        },
        "/info": {
            "get": operation(
                "text-embeddings-inference's info API: the model, its labels, the limits",
                json("TeiInfo"),
                None,
                "TeiError",
            )
        },
        "/health": {
            "get": operation(
                "text-embeddings-inference's health: 200 when serving, 503 when not (no token needed)",
                {},
                None,
                "TeiError",
            )
        },
        "/": {
            "post": operation(
                "The Inference API's text-classification task (huggingface_hub's InferenceClient posts "
                "it to the model's address): each text's labels by score",
                schema(_list(_list(_ref("LabelScore")))),
                json("TaskRequest"),
                "TeiError",
            )
        },
    }
