//! `execute` over a whole list: follows a paginated GET page by page, each page an ordinary upstream call (the
//! caller's credential and access mode, retries with Retry-After, an audit line and metrics with its page
//! number), merges the pages within the result and time budgets, and says where to continue when it stops.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Instant;

use http::{HeaderMap, Method, StatusCode};
use serde_json::{Map, Value, json};

use super::credential::{CallCredential, SignInProblem, sign_in_error};
use super::{
    Args, add_call_facts, continue_with, error_message, plan_call, rate_limit_of, respond,
    transport_error, transport_hint,
};
use crate::mcp::{CallContext, ToolOutcome, tool_error, tool_success};
use crate::openapi::{OperationIndex, Pagination};
use crate::telemetry::PageLabels;
use crate::upstream::pages::{Fit, Follow, MAX_PAGES, Merged, PageError, read_page};
use crate::upstream::{PlanError, PlannedRequest, UpstreamError, UpstreamResponse};

/// Whether this call follows pages: only a GET whose pagination the server can follow does. `max_pages` above 1
/// anywhere else is refused rather than ignored.
pub(super) fn follow_for<'a>(
    planned: &PlannedRequest,
    pagination: Option<&'a Pagination>,
    max_pages: u32,
) -> Result<Option<Follow<'a>>, String> {
    let follow = pagination.and_then(Follow::new);
    if planned.method == Method::GET && follow.is_some() {
        return Ok(follow);
    }
    if max_pages == 1 {
        return Ok(None);
    }
    let op = &planned.operation_key;
    let why = if planned.method != Method::GET {
        format!(
            "max_pages applies only to GET list operations; this call is {} {}",
            planned.method, planned.path_template
        )
    } else if let Some(p) = pagination {
        format!(
            "{op} pages with {} in a way the server cannot follow for you; page it yourself with those query parameters",
            p.request.join(", ")
        )
    } else {
        format!("{op} does not paginate, so there are no further pages to read")
    };
    Err(format!(
        "{why}. Drop max_pages (or set it to 1). Nothing was sent."
    ))
}

/// One `execute` call that reads up to `max_pages` pages of a list.
pub(super) struct ListCall<'a> {
    pub index: &'a OperationIndex,
    pub args: &'a Args,
    pub follow: Follow<'a>,
    pub max_pages: u32,
}

/// Why the walk stopped.
enum Stop {
    /// The list ended: every item was read.
    End,
    MaxPages,
    /// The next page would not fit the result budget; it is left out whole, so `next` fetches it again.
    Budget,
    /// The first page alone was over the result budget and was cut at an item boundary.
    Cut {
        kept: usize,
        total: usize,
    },
    /// The call's time budget (the upstream timeout) ran out.
    Time,
    /// Polytomic handed back a cursor it had already given.
    Repeated,
    /// A page after the first failed.
    Failed(Failure),
}

enum Failure {
    Status(Value),
    Transport(UpstreamError),
    Page(PageError),
    Plan(PlanError),
}

impl Stop {
    fn key(&self) -> &'static str {
        match self {
            Stop::End => "end",
            Stop::MaxPages => "max_pages",
            Stop::Budget | Stop::Cut { .. } => "result_budget",
            Stop::Time => "time_budget",
            Stop::Repeated => "repeated_cursor",
            Stop::Failed(_) => "error",
        }
    }

    fn hint(&self) -> String {
        match self {
            Stop::End => String::new(),
            Stop::MaxPages => format!(
                "More pages remain: call execute again with `next` (max_pages up to {MAX_PAGES} reads more per call)."
            ),
            Stop::Budget => "The result size limit is reached: call execute again with `next` for the rest, or keep fewer `fields` to fit more per call.".into(),
            Stop::Cut { kept, total } => format!(
                "The first page alone is over the result size limit: {kept} of its {total} items are shown, and `next` continues after this page. Keep fewer `fields` or ask for a smaller `limit` to get every item."
            ),
            Stop::Time => "The call's time limit ran out: call execute again with `next` to continue.".into(),
            Stop::Repeated => "Polytomic returned a page cursor it had already given; stopped to avoid repeating items.".into(),
            Stop::Failed(_) => "Call execute again with `next` to retry from the failed page.".into(),
        }
    }
}

/// The walk so far.
struct Walk {
    merged: Merged,
    /// Cursor of the first page not (fully) read: where `next` continues.
    cursor: Option<String>,
    /// Status and headers of the last page answered (the rate-limit headers shown reflect it).
    last: Option<(StatusCode, HeaderMap)>,
}

impl ListCall<'_> {
    pub(super) async fn read(
        &self,
        ctx: &CallContext<'_>,
        credential: &mut CallCredential<'_>,
        first: PlannedRequest,
        context: Value,
    ) -> ToolOutcome {
        let deadline = Instant::now() + ctx.state.upstream.total_timeout();
        let mut walk = Walk {
            merged: Merged::new(ctx.state.config.upstream.result_max_chars()),
            cursor: None,
            last: None,
        };
        let mut seen = HashSet::new();
        let mut planned = first.clone();
        let stop = loop {
            let number = walk.merged.pages + 1;
            let fetched = match self
                .fetch(ctx, credential, &planned, number, deadline)
                .await
            {
                Ok(fetched) => fetched,
                Err(problem) => return sign_in_error(ctx, &planned, problem, context),
            };
            let response = match fetched {
                Ok(response) => response,
                Err(error) if number == 1 => return transport_error(&error, context),
                Err(UpstreamError::Timeout(_)) => break Stop::Time,
                Err(error) => break Stop::Failed(Failure::Transport(error)),
            };
            walk.last = Some((response.status, response.headers.clone()));
            if !response.status.is_success() {
                if number == 1 {
                    return respond(ctx, &planned, response, context, self.args);
                }
                break Stop::Failed(Failure::Status(parsed_body(&response)));
            }
            let page = match read_page(&response.body, &self.follow, &self.args.fields) {
                Ok(page) => page,
                Err(_) if number == 1 => {
                    return respond(ctx, &planned, response, context, self.args);
                }
                Err(error) => break Stop::Failed(Failure::Page(error)),
            };
            let (next, total) = (page.next.clone(), page.count);
            match walk.merged.add(page) {
                Fit::Whole => {}
                Fit::NoRoom if number == 1 => {
                    return respond(ctx, &planned, response, context, self.args);
                }
                Fit::NoRoom => break Stop::Budget,
                Fit::Cut { kept } => {
                    walk.cursor = next;
                    break Stop::Cut { kept, total };
                }
            }
            let Some(next) = next else { break Stop::End };
            if !seen.insert(next.clone()) {
                break Stop::Repeated;
            }
            if number >= self.max_pages {
                walk.cursor = Some(next);
                break Stop::MaxPages;
            }
            planned = match self.plan_page(ctx, &next) {
                Ok(planned) => planned,
                Err(error) => break Stop::Failed(Failure::Plan(error)),
            };
            walk.cursor = Some(next);
        };
        self.outcome(ctx, &first, walk, stop, context)
    }

    /// One page: an ordinary upstream call within the call's deadline, audited and counted with its number.
    async fn fetch(
        &self,
        ctx: &CallContext<'_>,
        credential: &mut CallCredential<'_>,
        planned: &PlannedRequest,
        number: u32,
        deadline: Instant,
    ) -> Result<Result<UpstreamResponse, UpstreamError>, SignInProblem> {
        let upstream = &ctx.state.upstream;
        if Instant::now() >= deadline {
            return Ok(Err(UpstreamError::Timeout(upstream.total_timeout())));
        }
        let result = credential
            .send(ctx, planned, Some(deadline), Some(number))
            .await?;
        super::record_call(ctx, planned, &result, Some(number));
        ctx.state
            .metrics
            .upstream_pages
            .get_or_create(&PageLabels { page: number })
            .inc();
        Ok(result)
    }

    /// The request for the page at `cursor`, planned and checked like the agent's own call.
    fn plan_page(&self, ctx: &CallContext<'_>, cursor: &str) -> Result<PlannedRequest, PlanError> {
        let query = self.cursor_query(cursor);
        let mut merged = self.args.query.clone().unwrap_or_default();
        merged.extend(query);
        plan_call(ctx, self.index, self.args, Some(&merged))
    }

    fn cursor_query(&self, cursor: &str) -> Map<String, Value> {
        let mut query = Map::new();
        query.insert(self.follow.cursor_param.to_owned(), json!(cursor));
        query
    }

    fn outcome(
        &self,
        ctx: &CallContext<'_>,
        first: &PlannedRequest,
        walk: Walk,
        stop: Stop,
        context: Value,
    ) -> ToolOutcome {
        let Walk {
            merged,
            cursor,
            last,
        } = walk;
        let (read, count) = (merged.pages, merged.count);
        let out = merged.finish(&self.follow);
        let items = out.kept.unwrap_or(count);
        let (status, headers) = last.unwrap_or((StatusCode::OK, HeaderMap::new()));
        let complete = matches!(stop, Stop::End);
        let mut pages = json!({"read": read, "items": items, "complete": complete});
        if !complete {
            pages["stopped"] = json!(stop.key());
            pages["hint"] = json!(stop.hint());
        }
        let next = cursor
            .filter(|_| !matches!(stop, Stop::End | Stop::Repeated))
            .map(|cursor| continue_with(self.args, &self.cursor_query(&cursor)));
        let mut structured = json!({
            "status": status.as_u16(),
            "operation": first.operation_key,
            "body": out.body,
            "pages": pages,
            "context": context,
        });
        if let Some(next) = &next {
            structured["next"] = next.clone();
        }
        if let Stop::Cut { kept, total } = stop {
            structured["truncated"] =
                json!({"kind": "items", "kept": kept, "total": total, "hint": stop.hint()});
        }
        if !out.unmatched_fields.is_empty() {
            structured["unmatched_fields"] = json!(out.unmatched_fields);
        }
        add_call_facts(&mut structured, first, rate_limit_of(&headers));
        let body_text = serde_json::to_string(&structured["body"]).unwrap_or_default();
        let mut text = format!(
            "{} {} → {}: {read} page(s), {items} item(s), {}\n{body_text}",
            first.method,
            first.url.path(),
            status.as_u16(),
            if complete { "complete" } else { "not complete" },
        );
        if let Some(next) = &next {
            let _ = write!(text, "\nnext: call execute again with {next}");
        }
        let Stop::Failed(failure) = stop else {
            if !complete {
                let _ = write!(text, "\n{}", stop.hint());
            }
            return tool_success(structured, text)
                .about(&first.operation_key)
                .upstream_status(status.as_u16());
        };
        let (message, key) = failure_message(ctx, first, status, &failure, read + 1);
        let message = format!(
            "{message} The {read} page(s) read before it ({items} items) are in `body`; call execute again with `next` to continue from page {}.",
            read + 1
        );
        structured["error"] = json!(message);
        tool_error(format!("{message}\n{text}"), Some(structured))
            .about(&first.operation_key)
            .upstream_status(status.as_u16())
            .error_key(key.as_deref())
    }
}

/// A failed page's body: JSON when it is JSON, else its text.
fn parsed_body(response: &UpstreamResponse) -> Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()))
}

/// What went wrong on page `number`, for the agent, and Polytomic's error key when it sent one.
fn failure_message(
    ctx: &CallContext<'_>,
    planned: &PlannedRequest,
    status: StatusCode,
    failure: &Failure,
    number: u32,
) -> (String, Option<String>) {
    let (detail, key) = match failure {
        Failure::Status(body) => (
            error_message(ctx, planned, status.as_u16(), body),
            body.get("key").and_then(Value::as_str).map(str::to_owned),
        ),
        Failure::Transport(error) => (format!("{error}. {}", transport_hint(error)), None),
        Failure::Page(error) => (
            format!("{error}: Polytomic answered in a shape this operation does not declare."),
            None,
        ),
        Failure::Plan(error) => (error.to_string(), None),
    };
    (format!("Page {number} of the list failed: {detail}"), key)
}
