//! What an idempotent operation adds to an OpenAPI document (feature
//! `openapi`, [utoipa](https://docs.rs/utoipa) 6): document the operation as
//! usual (`#[utoipa::path]`), then register it once with [`document`], which
//! adds the idempotency contract to it:
//!
//! - the key header parameter (`Idempotency-Key`, or the handler's `header`),
//!   required when the handler requires a key;
//! - the replay header (`Idempotent-Replayed: true`) on every `2xx` response;
//! - the problem answers the runtime gives instead of running the handler,
//!   as RFC 9457 `application/problem+json` with the schema
//!   [`PROBLEM_SCHEMA`] (added to the document's components once): 400
//!   (key missing or invalid, principal missing, body unreadable), 409
//!   (same key still running, with `Retry-After`), 410 (an earlier response
//!   was not kept), 422 (key reused with another request), 503 (store
//!   unavailable or full, or shutting down, with `Retry-After`), 500 (the
//!   handler panicked, the record cannot be read, the bookkeeping failed),
//!   and 413 when the operation takes a request body (the body is read,
//!   under the runtime's limit, for the fingerprint);
//! - when the request body is JSON, what its extractor answers through the
//!   adapters' helpers (axum's [`ProblemJson`](crate::axum::ProblemJson),
//!   actix-web's [`json_config`](crate::actix::json_config)): 400
//!   `malformed-body`, 415 `unsupported-media-type`, 422 `invalid-body`.
//!   [`document_json_body`] documents the same on an operation that is not
//!   idempotent.
//!
//! A response the operation documents already under one of those statuses
//! (its own 400 for a validation error, say) is kept, and gains the problem
//! content and a sentence of description; one given as a `$ref` is left
//! as it is.
//!
//! Which options apply is read from the handler's [`HandlerConfig`]: for a
//! middleware form ([`IdempotentRoutesLayer`](crate::axum::IdempotentRoutesLayer),
//! [`IdempotentRoutes`](crate::actix::IdempotentRoutes)) and the plain API,
//! the `static` it was given; for an `#[idempotent]` handler (axum or
//! actix-web), [`handler_config(create_payment)`](crate::handler_config).
//!
//! ```
//! use axum::{http::StatusCode, Json};
//! use idempotent_runtime::axum::idempotent;
//! use idempotent_runtime::handler_config;
//! use idempotent_runtime::openapi::{document, HttpMethod};
//! use idempotent_runtime::HandlerConfig;
//! use utoipa::OpenApi;
//!
//! /// Creates a payment.
//! #[utoipa::path(post, path = "/payments",
//!     request_body(content = String, content_type = "application/json"),
//!     responses((status = 201, description = "Created", body = String)))]
//! #[idempotent(scope = "payments")]
//! async fn create_payment(body: String) -> (StatusCode, String) {
//!     (StatusCode::CREATED, body)
//! }
//!
//! /// A middleware form: its options are a `static`.
//! static TRANSFERS: HandlerConfig = HandlerConfig::new("transfers").required(false);
//!
//! #[utoipa::path(post, path = "/transfers", responses((status = 200, description = "Done")))]
//! async fn create_transfer() {}
//!
//! #[derive(OpenApi)]
//! #[openapi(paths(create_payment, create_transfer))]
//! struct Api;
//!
//! let mut api = Api::openapi();
//! document(&mut api, "/payments", HttpMethod::Post, handler_config(create_payment)).unwrap();
//! document(&mut api, "/transfers", HttpMethod::Post, &TRANSFERS).unwrap();
//!
//! let json = serde_json::to_value(&api).unwrap();
//! let post = &json["paths"]["/payments"]["post"];
//! assert_eq!(post["parameters"][0]["name"], "Idempotency-Key");
//! assert_eq!(post["parameters"][0]["required"], true);
//! assert!(post["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
//! for status in ["400", "409", "413", "415", "422", "500", "503"] {
//!     assert!(post["responses"][status]["content"]["application/problem+json"].is_object());
//! }
//! let transfer = &json["paths"]["/transfers"]["post"];
//! assert_eq!(transfer["parameters"][0]["required"], false);
//! assert!(transfer["responses"]["413"].is_null(), "no request body, no 413");
//! ```

use std::fmt;

use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{Components, OpenApi, Ref, RefOr, Required, Response, Schema};

pub use utoipa::openapi::path::HttpMethod;

use crate::config::{HandlerConfig, Principal};
use crate::problem::{self, display_header, Problem};
use crate::store::StoreError;
use crate::KeyError;

/// The name, under the document's `components/schemas`, of the RFC 9457
/// problem details schema that the problem responses refer to.
pub const PROBLEM_SCHEMA: &str = "IdempotencyProblem";

/// The operation to document is not in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDocumented {
    /// Its path.
    pub path: String,
    /// Its method, uppercase.
    pub method: &'static str,
}

impl fmt::Display for NotDocumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the OpenAPI document has no operation `{} {}`: document it (`#[utoipa::path]`) before adding its idempotency",
            self.method, self.path
        )
    }
}

impl std::error::Error for NotDocumented {}

/// Adds the idempotency contract of the handler with options `config` to the
/// operation `method path` of `openapi` (see the [module](self) docs). Adds
/// the [`PROBLEM_SCHEMA`] component if missing. Calling it again for the
/// same operation changes nothing more.
///
/// `Err` when the document has no such operation: nothing is changed.
pub fn document(
    openapi: &mut OpenApi,
    path: &str,
    method: HttpMethod,
    config: &HandlerConfig,
) -> Result<(), NotDocumented> {
    let operation = operation_of(openapi, path, &method)?;
    add_key_parameter(operation, config);
    add_replay_header(operation, config);
    for (status, response) in problem_responses(operation, config) {
        merge_response(operation, status, response);
    }
    add_problem_schema(openapi);
    Ok(())
}

fn operation_of<'a>(
    openapi: &'a mut OpenApi,
    path: &str,
    method: &HttpMethod,
) -> Result<&'a mut Operation, NotDocumented> {
    openapi
        .paths
        .paths
        .get_mut(path)
        .and_then(|item| operation_mut(item, method))
        .ok_or_else(|| NotDocumented {
            path: path.to_owned(),
            method: method_name(method),
        })
}

/// The [`PROBLEM_SCHEMA`] component, if missing.
fn add_problem_schema(openapi: &mut OpenApi) {
    let components = openapi.components.get_or_insert_with(Components::new);
    components
        .schemas
        .entry(PROBLEM_SCHEMA.to_owned())
        .or_insert_with(problem_schema);
}

fn operation_mut<'a>(item: &'a mut PathItem, method: &HttpMethod) -> Option<&'a mut Operation> {
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        HttpMethod::Options => item.options.as_mut(),
        HttpMethod::Head => item.head.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Trace => item.trace.as_mut(),
    }
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Put => "PUT",
        HttpMethod::Post => "POST",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Head => "HEAD",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Trace => "TRACE",
    }
}

/// The key header, replacing a parameter of the same name documented by
/// hand (header names are case-insensitive).
fn add_key_parameter(operation: &mut Operation, config: &HandlerConfig) {
    let name = display_header(config.header);
    let mut description = format!(
        "A key unique to this request, such as a UUID, of visible ASCII characters. \
         The first request with a key runs; a retry with the same key and the same request \
         (method, path, query and body) gets the stored response back, marked `{}: true`, \
         instead of running again. The same key with a different request is refused (422).",
        display_header(config.replay_header)
    );
    if !config.required {
        description.push_str(" Optional: without it, the request runs without idempotency.");
    }
    if !matches!(config.principal, Principal::None) {
        description.push_str(" Keys belong to the caller: another caller's key is another key.");
    }
    let parameter = ParameterBuilder::new()
        .name(&name)
        .parameter_in(ParameterIn::Header)
        .required(if config.required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                // The default limit; an app that sets another says so.
                .max_length(Some(crate::DEFAULT_MAX_KEY_LEN))
                // Visible ASCII; a leading `"` starts an RFC 8941 string,
                // which the server also takes, but the plain form is the
                // one to send.
                .pattern(Some("^[!#-~][!-~]*$"))
                .examples(["8e03978e-40d5-43e8-bc93-6894a57f9324"]),
        ))
        .build();
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.retain(|p| {
        !matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Header
            && p.name.eq_ignore_ascii_case(&name))
    });
    parameters.push(RefOr::T(parameter));
}

/// The replay header on every documented `2xx` response.
fn add_replay_header(operation: &mut Operation, config: &HandlerConfig) {
    let name = display_header(config.replay_header);
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !status.starts_with('2') {
            continue;
        }
        let header = HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["true"])),
            ))
            .description(Some(
                "`true` when this is the stored response to an earlier request with the same \
                 idempotency key, replayed; absent when this request ran.",
            ))
            .build();
        response
            .headers
            .entry(name.clone())
            .or_insert(RefOr::T(header));
    }
}

/// One reason an operation answers `status` with a problem.
struct Answer {
    status: u16,
    why: String,
    problems: Vec<Problem>,
    retry_after: bool,
}

impl Answer {
    fn new(status: u16, why: &str, problems: Vec<Problem>) -> Self {
        Self {
            status,
            why: why.to_owned(),
            problems,
            retry_after: false,
        }
    }

    fn retry_after(mut self) -> Self {
        self.retry_after = true;
        self
    }
}

/// The problem responses of this operation, by status: the runtime's, and
/// the body rejections of its JSON body (see [`document_json_body`]).
fn problem_responses(operation: &Operation, config: &HandlerConfig) -> Vec<(u16, Response)> {
    let mut bad_request = Vec::new();
    let mut why = Vec::new();
    let missing = format!("the `{}` header is missing", display_header(config.header));
    if config.required {
        bad_request.push(Problem::missing_key(config.header));
        why.push(missing.as_str());
    }
    bad_request.push(Problem::invalid_key(&KeyError::Empty));
    why.push("the key is invalid (empty, too long, not visible ASCII, or sent more than once)");
    if !matches!(config.principal, Principal::None) {
        bad_request.push(Problem::missing_principal("the request"));
        why.push("no caller could be read to scope the key by");
    }
    let has_body = operation.request_body.is_some();
    if has_body {
        bad_request.push(Problem::request_unreadable());
        why.push("the body could not be read");
    }
    let mut failed = vec![
        Problem::handler_failed(),
        Problem::record_unreadable(&crate::DecodeError(
            "the record is sealed under a key id this runtime's key ring does not hold",
        )),
        Problem::idempotency_failed(),
    ];
    if config.transactional {
        failed.push(Problem::transaction_escaped());
    }
    let mut answers = vec![
        Answer::new(
            400,
            &format!("{}; the request did not run.", capitalized(&join_or(&why))),
            bad_request,
        ),
        Answer::new(
            409,
            "A request with this idempotency key is still running (or its claim was taken \
             over by a retry while it ran); the request did not run. Retry after \
             `Retry-After` seconds to get its outcome.",
            vec![Problem::request_in_progress(false), Problem::lease_lost()],
        )
        .retry_after(),
        Answer::new(
            410,
            "The request with this key already ran, but its response was not kept (larger \
             than the server's storage limit), so it cannot be replayed; it does not run \
             again. Use a new key for a new request.",
            vec![Problem::response_not_stored(201)],
        ),
        Answer::new(
            422,
            "This idempotency key was already used with a different request (method, path, \
             query or body); the request did not run. Use a new key for a new request.",
            vec![Problem::key_reused()],
        ),
        Answer::new(
            500,
            "The handler failed (it panicked, and its key is free again), or the stored \
             record of this key cannot be read (corrupt, or sealed under an encryption key \
             this server does not hold: the request does not run again), or the \
             idempotency bookkeeping failed.",
            failed,
        ),
        Answer::new(
            503,
            "The idempotency store is unreachable, slow or full, or the server is shutting \
             down; the request did not run. Retry after `Retry-After` seconds.",
            vec![
                Problem::store_unavailable(),
                Problem::store(&StoreError::Full),
                Problem::shutting_down(),
            ],
        )
        .retry_after(),
    ];
    if has_body {
        answers.push(Answer::new(
            413,
            "The request body is larger than the server's limit for idempotent requests \
             (the body is read to tell a retry from a different request); the request did \
             not run.",
            vec![Problem::request_too_large(1024 * 1024)],
        ));
    }
    if takes_json(operation) {
        answers.extend(body_answers(false));
    }
    merged(answers)
}

/// Whether the operation's request body is JSON (`application/json` or a
/// `+json` type).
fn takes_json(operation: &Operation) -> bool {
    match &operation.request_body {
        Some(RefOr::T(body)) => body
            .content
            .keys()
            .any(|media| media == "application/json" || media.ends_with("+json")),
        _ => false,
    }
}

/// What the JSON body extractors answer through the adapters' helpers
/// (axum's `ProblemJson`, actix-web's `json_config`); 413 too when
/// `too_large`.
fn body_answers(too_large: bool) -> Vec<Answer> {
    let mut answers = vec![
        Answer::new(
            400,
            "The body is not valid JSON; the request did not run.",
            vec![Problem::malformed_body("expected value at line 1 column 1")],
        ),
        Answer::new(
            415,
            "The body is not `application/json` (`Content-Type` missing or another); the \
             request did not run.",
            vec![Problem::unsupported_media_type("application/json")],
        ),
        Answer::new(
            422,
            "The body is JSON of the wrong shape (a missing field, a wrong type); the request \
             did not run.",
            vec![Problem::invalid_body(
                "missing field `amount` at line 1 column 2",
            )],
        ),
    ];
    if too_large {
        answers.push(Answer::new(
            413,
            "The body is larger than the server's limit; the request did not run.",
            vec![Problem::body_too_large(
                "the request body is larger than the server's limit",
            )],
        ));
    }
    answers
}

/// One response per status: the reasons' descriptions joined, their
/// problems as examples.
fn merged(answers: Vec<Answer>) -> Vec<(u16, Response)> {
    let mut by_status: Vec<Answer> = Vec::new();
    for answer in answers {
        match by_status.iter_mut().find(|a| a.status == answer.status) {
            Some(same) => {
                same.why = format!("{}\n\nOr: {}", same.why, answer.why);
                same.problems.extend(answer.problems);
                same.retry_after |= answer.retry_after;
            }
            None => by_status.push(answer),
        }
    }
    by_status
        .into_iter()
        .map(|a| {
            (
                a.status,
                problem_response(&a.why, &a.problems, a.retry_after),
            )
        })
        .collect()
}

/// Documents what the JSON body extractors answer through the adapters'
/// helpers (axum's [`ProblemJson`](crate::axum::ProblemJson), actix-web's
/// [`json_config`](crate::actix::json_config)) on an operation that is not
/// idempotent, as [`document`] does on one that is: 400
/// `malformed-body`, 413 `request-too-large`, 415
/// `unsupported-media-type` and 422 `invalid-body`, as
/// `application/problem+json`.
///
/// `Err` when the document has no such operation: nothing is changed.
pub fn document_json_body(
    openapi: &mut OpenApi,
    path: &str,
    method: HttpMethod,
) -> Result<(), NotDocumented> {
    let operation = operation_of(openapi, path, &method)?;
    for (status, response) in merged(body_answers(true)) {
        merge_response(operation, status, response);
    }
    add_problem_schema(openapi);
    Ok(())
}

/// A problem response: `description`, the problem schema, `examples` (by
/// their kind), and `Retry-After` when `retry_after`.
fn problem_response(description: &str, examples: &[Problem], retry_after: bool) -> Response {
    let mut content = ContentBuilder::new().schema(Some(Ref::from_schema_name(PROBLEM_SCHEMA)));
    let mut seen = Vec::new();
    for p in examples {
        if seen.contains(&p.kind) {
            continue;
        }
        seen.push(p.kind);
        let value: serde_json::Value =
            serde_json::from_str(&p.to_json()).unwrap_or(serde_json::Value::Null);
        let example = ExampleBuilder::new()
            .summary(p.title)
            .value(Some(value))
            .build();
        content = content.examples_from_iter([(p.kind, example)]);
    }
    let mut response = Response::new(description);
    response
        .content
        .insert(problem::CONTENT_TYPE.to_owned(), RefOr::T(content.build()));
    if retry_after {
        response.headers.insert(
            "Retry-After".to_owned(),
            RefOr::T(
                HeaderBuilder::new()
                    .schema(Some(
                        ObjectBuilder::new()
                            .schema_type(Type::Integer)
                            .minimum(Some(0)),
                    ))
                    .description(Some("Seconds to wait before retrying."))
                    .build(),
            ),
        );
    }
    response
}

/// Adds `ours` under `status`, or merges it into the response documented
/// there: its problem content and headers where missing, and its
/// description appended.
fn merge_response(operation: &mut Operation, status: u16, ours: Response) {
    let entry = operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| RefOr::T(Response::new("")));
    let RefOr::T(theirs) = entry else {
        return;
    };
    if theirs.content.contains_key(problem::CONTENT_TYPE) {
        return;
    }
    if theirs.description.is_empty() {
        theirs.description = ours.description;
    } else {
        theirs.description = format!("{}\n\nOr: {}", theirs.description, ours.description);
    }
    for (name, header) in ours.headers {
        theirs.headers.entry(name).or_insert(header);
    }
    for (media, content) in ours.content {
        theirs.content.entry(media).or_insert(content);
    }
}

/// The RFC 9457 problem details object, as the runtime writes it.
fn problem_schema() -> RefOr<Schema> {
    let string = |description: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(description))
    };
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(
            "Problem details (RFC 9457), answered as `application/problem+json` instead of \
             running the handler.",
        ))
        .property(
            "type",
            string(
                "What kind of problem: a URI whose fragment names it (`#missing-key`, \
                 `#request-in-progress`, `#key-reused`, …).",
            )
            .format(Some(SchemaFormat::Custom("uri-reference".into()))),
        )
        .required("type")
        .property("title", string("A short, fixed summary of the kind."))
        .required("title")
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("The HTTP status."))
                .minimum(Some(100))
                .maximum(Some(599)),
        )
        .required("status")
        .property("detail", string("What happened in this case."))
        .required("detail")
        .property(
            "instance",
            string("A URI reference naming this occurrence, if any.")
                .format(Some(SchemaFormat::Custom("uri-reference".into()))),
        )
        .into()
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(parts: &[&str]) -> String {
    match parts {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::openapi::path::OperationBuilder;
    use utoipa::openapi::request_body::RequestBodyBuilder;
    use utoipa::openapi::{Info, PathsBuilder};

    fn api(with_body: bool, existing_400: bool) -> OpenApi {
        let mut op = OperationBuilder::new().response("201", Response::new("Created"));
        if with_body {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", ContentBuilder::new().build())
                    .build(),
            ));
        }
        if existing_400 {
            op = op.response("400", Response::new("Bad JSON"));
        }
        OpenApi::new(
            Info::new("t", "1"),
            PathsBuilder::new().path("/p", PathItem::new(HttpMethod::Post, op.build())),
        )
    }

    fn json(api: &OpenApi) -> serde_json::Value {
        serde_json::to_value(api).unwrap()
    }

    #[test]
    fn missing_operation_is_an_error_and_changes_nothing() {
        let mut doc = api(true, false);
        let before = json(&doc);
        let err = document(&mut doc, "/q", HttpMethod::Post, &HandlerConfig::new("s")).unwrap_err();
        assert_eq!(err.method, "POST");
        assert!(err.to_string().contains("POST /q"));
        let err = document(&mut doc, "/p", HttpMethod::Put, &HandlerConfig::new("s")).unwrap_err();
        assert_eq!(err.method, "PUT");
        assert_eq!(json(&doc), before);
    }

    #[test]
    fn adds_the_contract_once() {
        let config = HandlerConfig::new("s")
            .header("x-request-key")
            .replay_header("x-replayed")
            .principal(Principal::Header("x-api-key"));
        let mut doc = api(true, true);
        document(&mut doc, "/p", HttpMethod::Post, &config).unwrap();
        let once = json(&doc);
        document(&mut doc, "/p", HttpMethod::Post, &config).unwrap();
        assert_eq!(json(&doc), once, "a second registration changes nothing");

        let op = &once["paths"]["/p"]["post"];
        let params = op["parameters"].as_array().unwrap();
        assert_eq!(params.len(), 1);
        assert_eq!(params[0]["name"], "X-Request-Key");
        assert_eq!(params[0]["in"], "header");
        assert_eq!(params[0]["required"], true);
        assert_eq!(
            op["responses"]["201"]["headers"]["X-Replayed"]["schema"]["enum"],
            serde_json::json!(["true"])
        );
        // The operation's own 400 is kept, and gains the problem content.
        let bad = &op["responses"]["400"];
        assert!(bad["description"].as_str().unwrap().starts_with("Bad JSON"));
        assert!(
            bad["content"]["application/problem+json"]["examples"]["missing-principal"].is_object()
        );
        for status in ["409", "503"] {
            assert!(op["responses"][status]["headers"]["Retry-After"].is_object());
        }
        assert!(op["responses"]["413"].is_object());
        let problem = &once["components"]["schemas"][PROBLEM_SCHEMA];
        assert_eq!(
            problem["required"],
            serde_json::json!(["type", "title", "status", "detail"])
        );
    }

    #[test]
    fn optional_key_and_no_body() {
        let mut doc = api(false, false);
        let config = HandlerConfig::new("s").required(false);
        document(&mut doc, "/p", HttpMethod::Post, &config).unwrap();
        let op = &json(&doc)["paths"]["/p"]["post"];
        assert_eq!(op["parameters"][0]["required"], false);
        assert!(op["responses"]["413"].is_null());
        let examples = &op["responses"]["400"]["content"]["application/problem+json"]["examples"];
        assert!(examples["missing-key"].is_null());
        assert!(examples["invalid-key"].is_object());
    }

    #[test]
    fn json_bodies_document_their_rejections() {
        let examples = |op: &serde_json::Value, status: &str| -> Vec<String> {
            let e = &op["responses"][status]["content"]["application/problem+json"]["examples"];
            e.as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut doc = api(true, false);
        document(&mut doc, "/p", HttpMethod::Post, &HandlerConfig::new("s")).unwrap();
        let op = &json(&doc)["paths"]["/p"]["post"];
        assert_eq!(examples(op, "415"), ["unsupported-media-type"]);
        let bad = examples(op, "400");
        assert!(bad.contains(&"missing-key".into()) && bad.contains(&"malformed-body".into()));
        let unprocessable = examples(op, "422");
        assert!(unprocessable.contains(&"key-reused".into()));
        assert!(unprocessable.contains(&"invalid-body".into()));
        let failed = examples(op, "500");
        assert!(failed.contains(&"record-unreadable".into()));
        assert!(failed.contains(&"handler-failed".into()));

        let mut plain = api(true, false);
        document_json_body(&mut plain, "/p", HttpMethod::Post).unwrap();
        let doc = json(&plain);
        let op = &doc["paths"]["/p"]["post"];
        assert!(op["parameters"].is_null(), "no key header");
        assert_eq!(examples(op, "400"), ["malformed-body"]);
        assert_eq!(examples(op, "413"), ["request-too-large"]);
        assert!(op["responses"]["409"].is_null());
        assert!(doc["components"]["schemas"][PROBLEM_SCHEMA].is_object());
        assert!(document_json_body(&mut plain, "/q", HttpMethod::Post).is_err());
    }
}
