//! Enrolment: one subject or many through one path, each subject with its own key, sealed
//! templates and audit record.
//!
//! Order of writes, the invariant crash recovery relies on: the subject keys (and a pending mark
//! per subject) commit to `keys.db` first, then subjects, templates and audit records commit to
//! `store.db` in one audited transaction. A crash in between leaves keys without subjects, which
//! recovery removes; never a subject without a key.

use super::*;
use crate::policy::TemplateFusion;

/// One subject of an enrolment call, before sealing.
struct Request<'a> {
    reference: &'a str,
    templates: &'a [Vec<f32>],
    opts: &'a Enrolment,
    /// How many templates were averaged into `templates` (policy `template_fusion: mean`).
    fused_from: Option<usize>,
}

/// One subject sealed under its fresh data key, ready to write.
struct Sealed {
    pseudonym: [u8; 32],
    wrapped_key: Vec<u8>,
    reference: Vec<u8>,
    consent: Option<Vec<u8>>,
    image: Option<Vec<u8>>,
    templates: Vec<Vec<u8>>,
    /// The protected templates, for keeping an already loaded index current.
    protected: Vec<Vec<f32>>,
    expires: i64,
    fused_from: Option<usize>,
}

/// Where one subject landed: its row, its template rows.
struct Written {
    subject: i64,
    templates: Vec<i64>,
}

impl Store {
    // The arguments are what an enrolment is (who, where, whom, what, of which kind, how); a
    // parameter struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    /// Enrol a subject with one or more templates. Returns once the enrolment and its audit record
    /// are durable.
    pub fn enrol(
        &self,
        ctx: &Context,
        gallery: &str,
        reference: &str,
        templates: &[Vec<f32>],
        metric: Metric,
        pack: &str,
        opts: &Enrolment,
    ) -> Result<EnrolReceipt> {
        let request = Request {
            reference,
            templates,
            opts,
            fused_from: None,
        };
        self.enrol_subjects(ctx, gallery, &[request], metric, pack, false)?
            .pop()
            .ok_or_else(|| GalleryError::Invalid("no subject to enrol".into()))
    }

    /// Enrol many subjects in one transaction per database (all or nothing): for migrations and
    /// bulk loads, where one fsync per subject would dominate. Each subject still gets its own key,
    /// its own audit record, and the same checks as `enrol` (the same code).
    pub fn enrol_batch(
        &self,
        ctx: &Context,
        gallery: &str,
        items: &[(String, Vec<Vec<f32>>)],
        metric: Metric,
        pack: &str,
    ) -> Result<Vec<EnrolReceipt>> {
        let none = Enrolment::default();
        let requests: Vec<Request<'_>> = items
            .iter()
            .map(|(reference, templates)| Request {
                reference,
                templates,
                opts: &none,
                fused_from: None,
            })
            .collect();
        self.enrol_subjects(ctx, gallery, &requests, metric, pack, true)
    }

    fn enrol_subjects(
        &self,
        ctx: &Context,
        gallery: &str,
        requests: &[Request<'_>],
        metric: Metric,
        pack: &str,
        batch: bool,
    ) -> Result<Vec<EnrolReceipt>> {
        Action::Enrol.check(ctx.role)?;
        self.before_write();
        let info = self.gallery_meta(gallery)?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(m) = info.metric {
            if m != metric {
                return Err(GalleryError::Invalid(format!(
                    "gallery '{gallery}' holds {} templates; these are {}",
                    m.as_str(),
                    metric.as_str()
                )));
            }
        }
        same_pack(&info, pack)?;
        let dim = info
            .dim
            .or_else(|| requests[0].templates.first().map(Vec::len))
            .unwrap_or(0);
        let references: Vec<String> = requests
            .iter()
            .map(|r| crate::reference::normalise(r.reference, info.policy.reference_case))
            .collect::<Result<_>>()?;
        // A policy that averages: several templates of a subject become one. Templates that
        // disagree in length or hold non-finite values are left as they are, for the checks
        // below to refuse by name (a mean would hide them).
        let fused: Vec<Option<[Vec<f32>; 1]>> = requests
            .iter()
            .map(|r| {
                let well_formed = r
                    .templates
                    .iter()
                    .all(|t| t.len() == r.templates[0].len() && t.iter().all(|x| x.is_finite()));
                (info.policy.template_fusion == TemplateFusion::Mean
                    && r.templates.len() > 1
                    && well_formed)
                    .then(|| [template::fuse(r.templates)])
            })
            .collect();
        let requests: Vec<Request<'_>> = requests
            .iter()
            .zip(&references)
            .zip(&fused)
            .map(|((r, reference), fused)| Request {
                reference,
                templates: fused.as_ref().map_or(r.templates, |f| &f[..]),
                opts: r.opts,
                fused_from: fused.as_ref().map(|_| r.templates.len()),
            })
            .collect();
        let requests = &requests[..];
        let now = self.now();
        let limit = now + info.policy.retention_days as i64 * 86_400_000;
        for r in requests {
            check_request(gallery, r, dim, now, limit)?;
        }
        let warnings =
            self.follow_gallery_size(ctx, gallery, &info.policy, requests.len() as u64)?;
        let transform = self.transform(gallery, dim)?;
        let sealed: Vec<Sealed> = requests
            .par_iter()
            .map(|r| self.seal_subject(gallery, r, metric, &transform, limit))
            .collect::<Result<_>>()?;
        // Registered as in flight until this call returns: crash recovery and other threads of
        // this process leave these subjects' keys alone meanwhile.
        let _in_flight = InFlight::register(gallery, sealed.iter().map(|s| s.pseudonym))?;
        {
            let mut tx = self.keys().write()?;
            // Any conflict fails the whole call before anything is committed (the key transaction
            // rolls back when dropped).
            let rows: Vec<(&[u8], &[u8], i64)> = sealed
                .iter()
                .map(|s| (&s.pseudonym[..], &s.wrapped_key[..], now))
                .collect();
            let inserted = tx.insert_keys(gallery, &rows)?;
            // A key already there: a duplicate, or an interrupted attempt's (judged one by one).
            for (s, _) in sealed.iter().zip(&inserted).filter(|(_, new)| !**new) {
                self.insert_key(&mut *tx, gallery, &s.pseudonym, &s.wrapped_key, now)?;
            }
            let marks: Vec<Mark> = sealed
                .iter()
                .map(|s| Mark::new(gallery, &s.pseudonym, "enrol", now))
                .collect();
            tx.mark_all(&marks)?;
            tx.commit()?;
        }
        let committed = self.audited(ctx, |tx| {
            tx.set_kind(gallery, dim as i64, metric.as_str(), pack)?;
            let generation = tx.bump_generation(gallery)?;
            let mut out = Vec::with_capacity(sealed.len());
            let rows: Vec<NewSubject<'_>> = sealed
                .iter()
                .map(|s| NewSubject {
                    gallery,
                    pseudonym: &s.pseudonym,
                    reference: &s.reference,
                    consent: s.consent.as_deref(),
                    enrolled: now,
                    expires: s.expires,
                })
                .collect();
            let subjects = tx
                .insert_subjects(&rows)?
                .into_iter()
                .collect::<Option<Vec<i64>>>()
                .ok_or_else(|| GalleryError::DuplicateSubject(gallery.into()))?;
            let template_rows: Vec<(i64, &[u8])> = sealed
                .iter()
                .zip(&subjects)
                .flat_map(|(s, id)| s.templates.iter().map(move |t| (*id, &t[..])))
                .collect();
            let mut template_ids = tx.insert_templates(&template_rows)?.into_iter();
            for (s, &subject) in sealed.iter().zip(&subjects) {
                let templates: Vec<i64> = template_ids.by_ref().take(s.templates.len()).collect();
                if let Some(img) = &s.image {
                    tx.insert_image(subject, img)?;
                }
                tx.record_change(gallery, generation, "enrol", subject, &templates)?;
                let mut details = serde_json::json!({
                    "templates": s.templates.len(),
                    "image_kept": s.image.is_some(),
                    "consent_recorded": s.consent.is_some(),
                    "expires": audit::now_rfc3339(s.expires),
                    "pack": pack,
                });
                if batch {
                    details["batch"] = serde_json::Value::Bool(true);
                }
                if let Some(k) = s.fused_from {
                    details["averaged_from"] = serde_json::json!(k);
                }
                if !warnings.is_empty() {
                    details["warnings"] = serde_json::json!(warnings);
                }
                let head = tx.record(AuditEvent {
                    action: "enrol".into(),
                    gallery: Some(gallery.into()),
                    subject: Some(hex::encode(s.pseudonym)),
                    outcome: "enrolled".into(),
                    details,
                })?;
                out.push((
                    Written { subject, templates },
                    EnrolReceipt {
                        gallery: gallery.into(),
                        pseudonym: hex::encode(s.pseudonym),
                        templates: s.templates.len(),
                        expires: audit::now_rfc3339(s.expires),
                        audit_seq: head.seq,
                        warnings: warnings.clone(),
                    },
                ));
            }
            Ok((out, generation))
        });
        let pseudonyms = || sealed.iter().map(|s| &s.pseudonym[..]);
        let (written, generation) = match committed {
            Ok(((written, generation), _)) => (written, generation),
            Err(e) => {
                if matches!(e, GalleryError::Unavailable(_)) {
                    // Lost at commit, the enrolment may have landed: the keys and marks stay,
                    // and recovery decides from the record store at the next write (a key
                    // whose subject never appeared goes; a landed subject keeps its key).
                    self.interrupted(&e);
                    return Err(e);
                }
                // Refused: only the keys this call wrote (created now) go; a subject already
                // enrolled keeps its key. Where that cannot be done now, recovery does it.
                let cleaned = self.keys().write().and_then(|mut tx| {
                    for ps in pseudonyms() {
                        tx.delete_key(gallery, ps, Some(now))?;
                    }
                    tx.commit()
                });
                if cleaned.is_err() {
                    self.interrupted(&e);
                    return Err(e);
                }
                self.clear_marks(gallery, pseudonyms(), "enrol");
                return Err(e);
            }
        };
        self.clear_marks(gallery, pseudonyms(), "enrol");
        // Keep an already loaded index current without reloading it, when it was current just
        // before this change. (Otherwise another writer changed the gallery in between: the
        // next search follows every change since, this one included, in order.)
        if let Some(lg) = self.loaded_entry(gallery) {
            let mut lg = lg.write().unwrap_or_else(|p| p.into_inner());
            if lg.generation != generation - 1 {
                return Ok(written.into_iter().map(|(_, receipt)| receipt).collect());
            }
            lg.generation = generation;
            for (s, (w, _)) in sealed.iter().zip(&written) {
                if lg.index.is_compact() {
                    for (p, tid) in s.protected.iter().zip(&w.templates) {
                        lg.index.push(*tid as u64, p, s.expires);
                    }
                } else {
                    for p in &s.protected {
                        lg.index.push(w.subject as u64, p, s.expires);
                    }
                    lg.pseudonyms.insert(w.subject as u64, s.pseudonym);
                }
                lg.max_templates_per_subject = lg.max_templates_per_subject.max(s.protected.len());
            }
        }
        Ok(written.into_iter().map(|(_, receipt)| receipt).collect())
    }

    /// A fresh data key for the subject, wrapped by the master key, and everything of the subject
    /// sealed under it (templates after the gallery's transform).
    fn seal_subject(
        &self,
        gallery: &str,
        r: &Request<'_>,
        metric: Metric,
        transform: &OrthogonalTransform,
        limit: i64,
    ) -> Result<Sealed> {
        let ps = self.pseudonym(gallery, r.reference);
        let dk = crypto::random_key()?;
        let wrapped_key = self.wrapper.wrap(&aad("subject-key", gallery, &ps), &dk)?;
        let seal = |kind: &str, bytes: &[u8]| crypto::seal(&dk, &aad(kind, gallery, &ps), bytes);
        let protected: Vec<Vec<f32>> = r
            .templates
            .iter()
            .map(|t| match metric {
                Metric::Cosine => transform.apply(&unit(t)),
                Metric::Euclidean => transform.apply(t),
            })
            .collect();
        Ok(Sealed {
            pseudonym: ps,
            wrapped_key,
            reference: seal("reference", r.reference.as_bytes())?,
            consent: r
                .opts
                .consent
                .as_ref()
                .map(|c| seal("consent", c.as_bytes()))
                .transpose()?,
            image: r
                .opts
                .image
                .as_ref()
                .map(|i| seal("image", i))
                .transpose()?,
            templates: protected
                .iter()
                .map(|p| seal("template", &f32_to_bytes(p)))
                .collect::<Result<_>>()?,
            protected,
            expires: r.opts.expires_ms.map_or(limit, |e| e.min(limit)),
            fused_from: r.fused_from,
        })
    }

    /// Store a new subject key. Never overwrites a key in use: an existing subject is a duplicate;
    /// a key without a subject is either an enrolment in flight in another process (refused) or,
    /// past the orphan age, the leftover of a crash (replaced).
    pub(super) fn insert_key(
        &self,
        tx: &mut dyn KeyTxn,
        gallery: &str,
        ps: &[u8],
        wrapped: &[u8],
        now: i64,
    ) -> Result<()> {
        if tx.insert_key(gallery, ps, wrapped, now)? {
            return Ok(());
        }
        if self.backend.subject_exists(gallery, ps)? {
            return Err(GalleryError::DuplicateSubject(gallery.into()));
        }
        let created = tx.key_created(gallery, ps)?.unwrap_or(now);
        let owner = tx.mark_owner(gallery, ps, "enrol")?;
        // The key belongs to an enrolment that may still commit (its process is alive, within the
        // hour): refuse rather than pull the key from under it.
        // This call holds the subject's in-flight registration, so no other thread of this
        // process is enrolling it: a mark of this process is an interrupted attempt.
        if now - created <= ORPHAN_KEY_AGE_MS
            && owner.is_some_and(|o| enrolment_may_be_running(o, || false))
        {
            return Err(GalleryError::Invalid(
                "an enrolment of this subject is in progress or was interrupted less than an hour ago".into(),
            ));
        }
        tx.replace_key(gallery, ps, wrapped, now)
    }

    pub(super) fn clear_marks<'a>(
        &self,
        gallery: &str,
        pss: impl Iterator<Item = &'a [u8]>,
        op: &str,
    ) {
        let Ok(mut tx) = self.keys().write() else {
            return;
        };
        for ps in pss {
            let _ = tx.unmark(gallery, ps, op);
        }
        let _ = tx.commit();
    }
}

/// The checks every enrolled subject passes, before any key exists.
fn check_request(gallery: &str, r: &Request<'_>, dim: usize, now: i64, limit: i64) -> Result<()> {
    if r.templates.is_empty() {
        return Err(GalleryError::Invalid("no template to enrol".into()));
    }
    for t in r.templates {
        if t.len() != dim || dim == 0 {
            return Err(GalleryError::Dimension {
                gallery: gallery.into(),
                expected: dim,
                got: t.len(),
            });
        }
        if t.iter().any(|v| !v.is_finite()) {
            return Err(GalleryError::Invalid(
                "template holds a non-finite value".into(),
            ));
        }
    }
    if r.opts.expires_ms.map_or(limit, |e| e.min(limit)) <= now {
        return Err(GalleryError::Invalid("expiry is in the past".into()));
    }
    Ok(())
}

/// (gallery, pseudonym) of the subjects this process is enrolling now, whichever `Store` of the
/// process does it (pseudonyms are keyed per deployment, so two stores' subjects do not collide).
static IN_FLIGHT: std::sync::LazyLock<Mutex<Enrolling>> =
    std::sync::LazyLock::new(Default::default);

/// (gallery, pseudonym) pairs.
type Enrolling = std::collections::HashSet<(String, [u8; 32])>;

/// Whether this process is enrolling the subject right now.
pub(super) fn enrolling(gallery: &str, ps: &[u8]) -> bool {
    <[u8; 32]>::try_from(ps).is_ok_and(|ps| {
        IN_FLIGHT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&(gallery.to_string(), ps))
    })
}

/// Subjects this process is enrolling, registered for the length of one call (see
/// `Store::enrolling`); a second call for one of them while the first runs is refused.
struct InFlight {
    gallery: String,
    subjects: Vec<[u8; 32]>,
}

impl InFlight {
    fn register(gallery: &str, subjects: impl Iterator<Item = [u8; 32]>) -> Result<InFlight> {
        let mut taken = InFlight {
            gallery: gallery.to_string(),
            subjects: Vec::new(),
        };
        let mut set = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        for ps in subjects {
            if !set.insert((gallery.to_string(), ps)) {
                drop(set);
                // `taken` releases what it registered so far.
                return Err(GalleryError::Invalid(
                    "an enrolment of this subject is in progress".into(),
                ));
            }
            taken.subjects.push(ps);
        }
        Ok(taken)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut set = IN_FLIGHT.lock().unwrap_or_else(|p| p.into_inner());
        for ps in &self.subjects {
            set.remove(&(self.gallery.clone(), *ps));
        }
    }
}

/// Templates of one pack are only ever compared with templates of the same pack: another pack's
/// (or the same network's flip-averaged twin's) distances mean something else.
pub(super) fn same_pack(info: &GalleryInfo, pack: &str) -> Result<()> {
    match &info.pack {
        Some(p) if p != pack => Err(GalleryError::Invalid(format!(
            "gallery '{}' holds templates of model pack '{p}', not '{pack}'",
            info.name
        ))),
        _ => Ok(()),
    }
}

impl Store {
    /// Refuses, before any search, a probe made by another pack than the gallery's templates
    /// (e.g. a gate run with `--pack dlib` against a gallery enrolled with `dlib-flip`).
    pub fn check_pack(&self, gallery: &str, pack: &str) -> Result<()> {
        same_pack(&self.gallery_meta(gallery)?, pack)
    }
}
