//! Change requests: those this person may approve (approve with a comment, or reject with a
//! reason), the scheduled ones with their times, and the approved ones to apply.

use askama::Template;
use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use mycosynth_subscriber::wire::{
    endpoint, ApproveRequest, ListFilter, ProposalList, ProposalOutcome, ProposalRecord,
    RejectRequest, RequestIdRequest, RequestListRequest,
};

use super::{field, render, DiffRow, Page, OPEN_AUTHOR};
use crate::console::error::ConsoleError;
use crate::console::viewer::Viewer;

/// A change request as the page shows it.
pub struct RequestView {
    /// The record.
    pub record: ProposalRecord,
    /// Its diff against its base.
    pub diff: Vec<DiffRow>,
    /// When it applies (RFC 3339), if scheduled.
    pub at: String,
}

impl RequestView {
    fn of(record: ProposalRecord) -> RequestView {
        RequestView {
            diff: DiffRow::of(&record.diff),
            at: record
                .at_us
                .and_then(crate::clock::rfc3339_us)
                .unwrap_or_default(),
            record,
        }
    }
}

/// The requests page.
#[derive(Template)]
#[template(path = "console/requests.html")]
pub struct RequestsPage {
    /// The layout.
    pub page: Page,
    /// Those this person may approve and has not.
    pub to_approve: Vec<RequestView>,
    /// Scheduled, by time.
    pub scheduled: Vec<RequestView>,
    /// Every other pending one this person may read.
    pub pending: Vec<RequestView>,
}

async fn list(viewer: &Viewer, filter: ListFilter) -> Result<Vec<ProposalRecord>, ConsoleError> {
    let request = RequestListRequest {
        filter,
        author: OPEN_AUTHOR.into(),
        ..Default::default()
    };
    let list: ProposalList = viewer.api.call(endpoint::REQUEST_LIST, &request).await?;
    Ok(list.requests)
}

/// `GET /requests`.
pub async fn page(Extension(viewer): Extension<Viewer>) -> Result<Response, ConsoleError> {
    let to_approve = list(&viewer, ListFilter::ToApprove).await?;
    // The scheduled ones are the pending ones with a time (as `ListFilter::Scheduled` lists
    // them, by time): one list call for both.
    let (mut scheduled, pending): (Vec<ProposalRecord>, Vec<ProposalRecord>) =
        list(&viewer, ListFilter::Pending)
            .await?
            .into_iter()
            .filter(|r| !to_approve.iter().any(|a| a.id == r.id))
            .partition(|r| r.at_us.is_some());
    scheduled.sort_by_key(|r| r.at_us);
    render(&RequestsPage {
        page: Page::new("Change requests", &viewer),
        to_approve: to_approve.into_iter().map(RequestView::of).collect(),
        scheduled: scheduled.into_iter().map(RequestView::of).collect(),
        pending: pending.into_iter().map(RequestView::of).collect(),
    })
}

/// `POST /requests/{id}/approve` (`content_hash` of what was shown, `comment`).
pub async fn approve(
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let request = ApproveRequest {
        id,
        content_hash: field(&fields, "content_hash").to_owned(),
        comment: field(&fields, "comment").to_owned(),
        author: OPEN_AUTHOR.into(),
    };
    let _: ProposalOutcome = viewer.api.call(endpoint::REQUEST_APPROVE, &request).await?;
    Ok(Redirect::to("/requests").into_response())
}

/// `POST /requests/{id}/reject` (`reason`, required by the validator).
pub async fn reject(
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let request = RejectRequest {
        id,
        reason: field(&fields, "reason").to_owned(),
        author: OPEN_AUTHOR.into(),
    };
    let _: ProposalOutcome = viewer.api.call(endpoint::REQUEST_REJECT, &request).await?;
    Ok(Redirect::to("/requests").into_response())
}

/// `POST /requests/{id}/apply`: commits an approved request (the validator checks that it is
/// approved and that this person may apply it).
pub async fn apply(
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let request = RequestIdRequest {
        id,
        author: OPEN_AUTHOR.into(),
        reason: String::new(),
    };
    let _: ProposalOutcome = viewer.api.call(endpoint::REQUEST_APPLY, &request).await?;
    Ok(Redirect::to("/requests").into_response())
}
