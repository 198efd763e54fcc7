"""The REST contract v1 as schemas: they document /openapi.json and shape every response."""
from __future__ import annotations

from apiflask import Schema
from apiflask.fields import Boolean, Dict, File, Float, Integer, List, Nested, String
from apiflask.validators import Length, OneOf, Range

from common.error_codes import ErrorCode
from common.jobs import IMAGE_STATUSES, JOB_STATUSES, QUEUED
from common.webhooks import CALLBACK_STATUSES
from webapp import examples


class ErrorDetail(Schema):
    code = String(required=True, validate=OneOf([code.value for code in ErrorCode]),
                  metadata={"description": "stable and machine-readable: branch on this, not on the message"})
    message = String(required=True, metadata={"description": "for people: what was wrong"})


class ErrorOut(Schema):
    error = Nested(ErrorDetail, required=True)
    job_id = String(metadata={"format": "uuid", "description": "`timeout` only: the job that goes on"})
    status_url = String(metadata={"description": "`timeout` only: where to poll it"})


class UploadIn(Schema):
    file = List(File(), required=True, validate=Length(min=1),
                metadata={"description": "one part per image (JPEG, PNG, GIF, WebP, BMP, ...)"})
    # The optional callback_url's example is empty (with none, Swagger UI makes up a URL) and the
    # Idempotency-Key has none: /docs's "Try it out" sends what it shows with every request (a
    # callback this service may have no secret for, one key with other photos: a 409). The pattern
    # admits the empty value a form sends for a field left blank.
    callback_url = String(metadata={
        "pattern": r"^(https?://\S+)?$", "example": "",
        "description": "optional (an empty value is none): once the job is done the service POSTs its document "
                       "(as `GET status_url` answers) here, signed with `X-Sportclf-Signature: t=<unix time>,"
                       "v1=<hex HMAC-SHA256 of \"<t>.<body>\" with WEBHOOK_SECRET>`, retried with backoff; the "
                       "outcome shows in the job's `callback`. http(s) only, to public addresses (unless "
                       "WEBHOOK_ALLOW_PRIVATE); no redirect is followed"})


class IdempotencyHeader(Schema):
    idempotency_key = String(data_key="Idempotency-Key", metadata={
        "minLength": 1, "maxLength": 255,
        "description": "optional, 1-255 printable ASCII characters (a UUID): sending the same request again with "
                       "the same key, within the result TTL, answers the first job (same job_id, 202, with "
                       "`Idempotent-Replayed: true`) instead of making a second; the same key with other files, "
                       "file names or callback_url is a 409 `idempotency_key_reused`"})


class PredictIn(Schema):
    file = File(required=True, metadata={"description": "one image"})


class JobAccepted(Schema):
    job_id = String(required=True, metadata={"format": "uuid"})
    status = String(required=True, validate=OneOf([QUEUED]))
    total = Integer(required=True)
    status_url = String(required=True)


class LocationHeader(Schema):
    location = String(required=True, data_key="Location",
                      metadata={"description": "the job's status_url", "example": examples.STATUS_URL})


class AcceptedHeaders(LocationHeader):
    replayed = String(data_key="Idempotent-Replayed", validate=OneOf(["true"]), metadata={
        "example": "true", "description": "only when an `Idempotency-Key` named a job already: this is that job"})


class Prediction(Schema):
    label = String(required=True, metadata={"description": "the model's class label (stable key)"})
    display_name = String(metadata={"description": "the label spelled for people"})
    confidence = Float(required=True, metadata={"minimum": 0, "maximum": 1})


class ImageResult(Schema):
    index = Integer(required=True, metadata={"description": "position of the file in the upload"})
    filename = String(required=True)
    status = String(required=True, validate=OneOf(IMAGE_STATUSES))
    top3 = List(Nested(Prediction), required=True, metadata={"description": "3 entries once done, most likely first"})
    confident = Boolean(allow_none=True, required=True, metadata={
        "description": "once done: whether the first answer is sure enough to state (its calibrated confidence is at "
                       "or above the model card's threshold); false means \"not sure: maybe one of these\"; null before"})
    error = Nested(ErrorDetail, allow_none=True, required=True)


class Progress(Schema):
    done = Integer(required=True)
    failed = Integer(required=True)
    total = Integer(required=True)


class ModelInfo(Schema):
    name = String(required=True)
    version = String(required=True)


class Accuracy(Schema):
    images = Integer(required=True, metadata={"description": "held-out photos it was measured on"})
    top1 = Float(required=True, metadata={"description": "share whose first answer was right"})
    top3 = Float(required=True, metadata={"description": "share with the right answer among the three"})


class ModelOut(ModelInfo):
    architecture = String(allow_none=True)
    precision = String(allow_none=True)
    accuracy = Nested(Accuracy, allow_none=True, required=True,
                      metadata={"description": "on the validation split; null when the model card has no figures"})
    real_world_accuracy = Nested(Accuracy, allow_none=True, required=True,
                                 metadata={"description": "on real-world photos of 13 sports (wild-dev); null when "
                                                          "the model card has no figures"})


class Callback(Schema):
    url = String(required=True, metadata={"description": "the job's callback_url"})
    status = String(required=True, validate=OneOf(CALLBACK_STATUSES), metadata={
        "description": "`pending` until a POST is answered 2xx (`delivered`) or every attempt failed (`failed`)"})
    attempts = Integer(required=True, metadata={"description": "POSTs made so far"})
    last_error = String(allow_none=True, required=True, metadata={"description": "why the last attempt failed"})


class JobOut(Schema):
    job_id = String(required=True, metadata={"format": "uuid"})
    status = String(required=True, validate=OneOf(JOB_STATUSES))
    progress = Nested(Progress, required=True)
    created_at = String(required=True, metadata={"format": "date-time"})
    finished_at = String(allow_none=True, required=True, metadata={"format": "date-time"})
    model = Nested(ModelInfo, required=True)
    callback = Nested(Callback, allow_none=True, required=True,
                      metadata={"description": "the webhook's delivery; null for a job sent without callback_url"})
    results = List(Nested(ImageResult), required=True)


class ModelQuery(Schema):
    model = String(metadata={"example": examples.MODEL_ID, "description": "name@version: this job goes to this "
                             "model, whatever the routing (GET /api/v1/models lists them); unknown: 422 unknown_model"})


class Split(Schema):
    model = String(required=True, metadata={"description": "a model id, name@version", "example": examples.MODEL_ID})
    share = Float(required=True, validate=Range(0, 100), metadata={"description": "percent of jobs"})


class RoutingIn(Schema):
    active = String(metadata={"description": "the model that takes the jobs the canary does not"})
    canary = Nested(Split, allow_none=True, metadata={"description": "a model taking `share` percent of jobs; "
                                                                     "null: none (a roll-back)"})
    shadow = Nested(Split, allow_none=True, metadata={"description": "a model that also classifies `share` percent "
                                                                     "of jobs, unseen by clients; null: none"})


class RoutingOut(Schema):
    active = String(required=True)
    canary = Nested(Split, allow_none=True, required=True)
    shadow = Nested(Split, allow_none=True, required=True)
    source = String(required=True, validate=OneOf(["settings", "redis"]), metadata={
        "description": "settings: MODEL_ACTIVE/MODEL_CANARY/MODEL_SHADOW; redis: as last changed by an operator"})


class RoutingChanged(RoutingOut):
    """The routing as a change left it (its own name: apispec registers each schema class once)."""


class ShadowStats(Schema):
    share = Float(required=True, metadata={"description": "percent of jobs it also classifies"})
    compared = Integer(required=True, metadata={"description": "images it classified beside the job's own model"})
    agreed = Integer(required=True, metadata={"description": "of those, how many got the same top-1"})
    agreement = Float(allow_none=True, required=True, metadata={"description": "agreed / compared; null before any"})


class ServedModel(ModelOut):
    id = String(required=True, metadata={"description": "name@version: what ?model= and the routing name"})
    share = Float(required=True, metadata={"description": "percent of new jobs routed to it"})
    workers = Integer(required=True, metadata={"description": "worker processes serving it now"})
    shadow = Nested(ShadowStats, allow_none=True, required=True, metadata={"description": "while it is the shadow"})


class ModelsOut(Schema):
    routing = Nested(RoutingOut, required=True)
    models = List(Nested(ServedModel), required=True)


class WaitQuery(Schema):
    wait = Float(load_default=0, metadata={"minimum": 0, "maximum": 30, "example": 30,
                 "description": "seconds to hold the request until the job is done (long poll)"})


class SubmitQuery(WaitQuery, ModelQuery):
    """POST /api/v1/jobs: hold the request for the result, and pin a model."""


class ClassesOut(Schema):
    classes = List(String(), required=True)
    display_names = Dict(keys=String(), values=String(), required=True)


class LimitsOut(Schema):
    max_images_per_job = Integer(required=True, metadata={"description": "more files in one request: 413"})
    max_image_bytes = Integer(required=True, metadata={"description": "a larger file: 413"})
    max_request_bytes = Integer(required=True, metadata={"description": "a larger request body: 413"})
    max_pixels = Integer(required=True, metadata={"description": "a larger image fails alone (image_too_large)"})


class LegacyPrediction(Schema):
    sport = String(required=True)
    confidence = Float(required=True, metadata={"description": "percent, 0-100"})


class PredictOut(Schema):
    sport = String(required=True)
    confidence = Float(required=True, metadata={"description": "percent, 0-100"})
    top_3 = List(Nested(LegacyPrediction), required=True)
    confident = Boolean(required=True, metadata={"description": "false: not sure, maybe one of top_3"})


class HealthOut(Schema):
    status = String(required=True)


class ModelReady(Schema):
    id = String(required=True)
    share = Float(required=True, metadata={"description": "percent of new jobs routed to it"})
    workers = Integer(required=True, metadata={"description": "worker processes serving it"})
    ready = Boolean(required=True, metadata={"description": "false: it takes jobs and no worker serves it"})


class ReadyOut(Schema):
    status = String(required=True, validate=OneOf(["ready", "not_ready"]))
    redis = String(required=True)
    workers = Integer(required=True)
    model = Nested(ModelInfo, allow_none=True)
    models = List(Nested(ModelReady), metadata={"description": "each model with a share of jobs, or served"})
    problems = List(String())
