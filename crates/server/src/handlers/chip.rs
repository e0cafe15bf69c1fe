//! Passport chips as the reference of a 1:1 decision (`dg2` + `sod` parts, optional `dg1`, on
//! `POST /v1/verify` and `POST /v1/gate/session`): passive authentication before anything else,
//! so a chip the policy refuses costs no face processing and nothing is compared.

use super::ctx;
use crate::apikeys::ApiKey;
use crate::error::{ApiError, ApiResult};
use crate::AppState;
use app::chip::{read_chip, ChipFiles, ChipReference, DECIDED_BY_PA};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The reference a request names: an image, or a chip that passed passive authentication's
/// checks or was refused by the policy.
pub(crate) enum Reference {
    Image(Bytes),
    Chip(Box<ChipReference>),
}

/// Takes the reference parts out of a multipart request: `reference` (an image) or `dg2` + `sod`
/// (+ `dg1`). None when neither is there.
pub(crate) async fn take_reference(
    st: &Arc<AppState>,
    fields: &mut HashMap<String, Bytes>,
) -> ApiResult<Option<Reference>> {
    let image = fields.remove("reference");
    let (dg2, sod, dg1) = (
        fields.remove("dg2"),
        fields.remove("sod"),
        fields.remove("dg1"),
    );
    match (image, dg2, sod) {
        (None, None, None) if dg1.is_none() => Ok(None),
        (Some(img), None, None) if dg1.is_none() => Ok(Some(Reference::Image(img))),
        (None, Some(dg2), Some(sod)) => {
            let st = st.clone();
            let chip = tokio::task::spawn_blocking(move || {
                let files = ChipFiles {
                    sod: &sod,
                    dg2: &dg2,
                    dg1: dg1.as_deref(),
                };
                read_chip(&files, &st.chip, std::time::SystemTime::now())
            })
            .await
            .map_err(|_| ApiError::internal())?
            .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "chip_unreadable", e.to_string()))?;
            Ok(Some(Reference::Chip(Box::new(chip))))
        }
        (Some(_), _, _) => Err(ApiError::bad_request(
            "ambiguous_reference",
            "give either a 'reference' image or the chip's 'dg2' and 'sod', not both",
        )),
        _ => Err(ApiError::bad_request(
            "chip_incomplete",
            "a chip reference needs 'dg2' and 'sod' ('dg1' optional): its face is used only after passive authentication",
        )),
    }
}

/// The chip's audit details: check statuses and the document as a keyed pseudonym (HMAC under
/// the deployment's pseudonym key), never DG1's fields.
pub(crate) fn audit_details(st: &AppState, chip: &ChipReference) -> Value {
    let pseudonym = chip
        .document_reference()
        .map(|r| hex::encode(st.store.pseudonym("~passport-documents", &r)));
    chip.audit_record(pseudonym)
}

/// Audits and answers a chip the policy refused: nothing compared, no face processed. `answer`
/// adds the route's own fields.
pub(crate) async fn refuse(
    st: &Arc<AppState>,
    key: &ApiKey,
    purpose: String,
    chip: &ChipReference,
    mode: &'static str,
    answer: Value,
) -> ApiResult<Json<Value>> {
    let mut details = audit_details(st, chip);
    details["compared"] = json!(false);
    details["mode"] = json!(mode);
    let c = ctx(key, purpose);
    let seq = super::blocking(st, move |store| {
        store.audit_event(
            &c,
            gallery::audit::AuditEvent {
                action: "verify".into(),
                outcome: "chip-refused".into(),
                details,
                ..Default::default()
            },
        )
    })
    .await?;
    st.metrics.decision(false);
    let mut v = json!({
        "match": false,
        "score": null,
        "metric": st.pipeline.metric(),
        "threshold": st.default_threshold,
        "decided_by": DECIDED_BY_PA,
        "chip": chip.report_json(false),
        "audit_seq": seq,
        "warnings": [],
    });
    if let (Some(v), Some(more)) = (v.as_object_mut(), answer.as_object()) {
        v.extend(more.clone());
    }
    Ok(Json(v))
}
