//! Loading a gallery's templates into a search index: streamed, decrypted in parallel, never
//! a whole sealed copy in memory.

use super::*;

/// Rows per chunk when a gallery loads: big enough to keep the decrypting threads busy, small
/// enough that the chunks in flight (two) are a few tens of megabytes.
pub(super) const LOAD_CHUNK: usize = 32_768;

/// Runs `produce` on a reader thread of `sc`; the rows it emits arrive in chunks of `LOAD_CHUNK`
/// (the channel holds one chunk, so reading stays one chunk ahead of the consumer). The sink
/// returns false once the consumer has gone; an error ends the stream with that error.
pub(super) fn chunked_reader<'scope, T: Send + 'scope>(
    sc: &'scope std::thread::Scope<'scope, '_>,
    produce: impl FnOnce(&mut dyn FnMut(T) -> bool) -> Result<()> + Send + 'scope,
) -> std::sync::mpsc::Receiver<Result<Vec<T>>> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    sc.spawn(move || {
        let mut chunk = Vec::with_capacity(LOAD_CHUNK);
        let mut open = true;
        let done = produce(&mut |row| {
            chunk.push(row);
            if chunk.len() == LOAD_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(LOAD_CHUNK));
                open = tx.send(Ok(full)).is_ok();
            }
            open
        });
        let _ = tx.send(done.map(|()| chunk));
    });
    rx
}

impl Store {
    pub(super) fn loaded_entry(&self, gallery: &str) -> Option<Arc<RwLock<LoadedGallery>>> {
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(gallery)
            .cloned()
    }

    pub(super) fn generation(&self, gallery: &str) -> Result<i64> {
        self.backend
            .generation(gallery)?
            .ok_or_else(|| GalleryError::UnknownGallery(gallery.into()))
    }

    /// Decrypt a gallery's templates into memory once; after that, follow what other processes
    /// (and nodes sharing the database) change, and reload only when that cannot be followed.
    /// Every search calls this first, so it never runs on an index older than the database.
    pub(super) fn load(&self, gallery: &str) -> Result<Arc<RwLock<LoadedGallery>>> {
        let generation = self.generation(gallery)?;
        if let Some(lg) = self.loaded_entry(gallery) {
            if lg.read().unwrap_or_else(|p| p.into_inner()).generation == generation {
                return Ok(lg);
            }
            if self.follow(gallery, &lg, generation)? {
                return Ok(lg);
            }
        }
        let gate = self
            .loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(gallery.to_string())
            .or_default()
            .clone();
        let _one_load = gate.lock().unwrap_or_else(|p| p.into_inner());
        // Whoever held the gate may have loaded this generation meanwhile.
        let generation = self.generation(gallery)?;
        if let Some(lg) = self.loaded_entry(gallery) {
            if lg.read().unwrap_or_else(|p| p.into_inner()).generation == generation {
                return Ok(lg);
            }
        }
        self.stats
            .reloads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let info = self.gallery_meta(gallery)?;
        let metric = info.metric.unwrap_or(Metric::Euclidean);
        let dim = info.dim.unwrap_or(0);
        let (mut index, pseudonyms, max_templates_per_subject) = match info.policy.index {
            IndexChoice::Compact => {
                let (index, max) = self.load_compact(gallery, dim)?;
                (
                    Box::new(index) as Box<dyn SearchIndex>,
                    IdMap::default(),
                    max,
                )
            }
            IndexChoice::Exact => self.load_full(gallery, dim, None)?,
            IndexChoice::Hnsw(params) => self.load_full(gallery, dim, Some(params))?,
        };
        let memory_locked = index.lock_memory();
        let lg = Arc::new(RwLock::new(LoadedGallery {
            generation,
            metric,
            index,
            pseudonyms,
            max_templates_per_subject,
            memory_locked,
        }));
        // A gallery with nothing enrolled yet has no template length: its empty index is not
        // kept, so no enrolment is ever applied to an index of the wrong length (the next
        // search loads the gallery as it then is).
        if info.dim.is_some() {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(gallery.into(), lg.clone());
        }
        Ok(lg)
    }

    /// Bring a loaded index up to generation `upto` by applying the changes recorded since its
    /// own generation. False when they do not account for every generation in between (a
    /// change of another kind — policy, rekey, recovery — or one pruned): the caller reloads.
    fn follow(&self, gallery: &str, lg: &RwLock<LoadedGallery>, upto: i64) -> Result<bool> {
        let from = lg.read().unwrap_or_else(|p| p.into_inner()).generation;
        if from > upto || upto - from > backend::CHANGES_KEPT {
            return Ok(false);
        }
        let changes = self.backend.changes_since(gallery, from, upto)?;
        let mut next = from + 1;
        for c in &changes {
            if c.kind != "enrol" && c.kind != "delete" {
                return Ok(false);
            }
            if c.generation == next {
                next += 1;
            } else if c.generation != next - 1 {
                return Ok(false);
            }
        }
        if next != upto + 1 {
            return Ok(false);
        }
        // Enrolled subjects are read and opened before the index is locked: searches go on
        // meanwhile. A subject gone since (or whose key is) is skipped: a later change removes it.
        // A kept index has the gallery's template length (fixed by its first enrolment).
        let dim = lg.read().unwrap_or_else(|p| p.into_inner()).index.dim();
        let mut opener = TemplateOpener::new(gallery, dim);
        type Opened = (backend::SubjectTemplates, Vec<Zeroizing<Vec<f32>>>);
        let mut added: IdMap<i64, Opened> = IdMap::default();
        for c in changes.iter().filter(|c| c.kind == "enrol") {
            let Some(subject) = self.backend.subject_by_id(gallery, c.subject)? else {
                continue;
            };
            let Some(wrapped) = self.keys().wrapped(gallery, &subject.pseudonym)? else {
                continue;
            };
            let dk = self
                .wrapper
                .unwrap_key(&aad("subject-key", gallery, &subject.pseudonym), &wrapped)?;
            let mut opened = Vec::with_capacity(subject.templates.len());
            for (_, sealed) in &subject.templates {
                let mut v = Zeroizing::new(vec![0f32; dim]);
                opener.open(&dk, &subject.pseudonym, sealed, &mut v)?;
                opened.push(v);
            }
            added.insert(c.subject, (subject, opened));
        }
        let mut g = lg.write().unwrap_or_else(|p| p.into_inner());
        if g.generation != from {
            // Another thread moved it meanwhile.
            return Ok(g.generation == upto);
        }
        for c in &changes {
            match c.kind.as_str() {
                "enrol" => {
                    let Some((s, opened)) = added.remove(&c.subject) else {
                        continue;
                    };
                    for ((tid, _), v) in s.templates.iter().zip(&opened) {
                        let row = if g.index.is_compact() {
                            *tid
                        } else {
                            c.subject
                        };
                        g.index.push(row as u64, v, s.expires);
                    }
                    if !g.index.is_compact() {
                        g.pseudonyms.insert(c.subject as u64, s.pseudonym);
                    }
                    g.max_templates_per_subject =
                        g.max_templates_per_subject.max(s.templates.len());
                }
                _ => {
                    if g.index.is_compact() {
                        for tid in &c.templates {
                            g.index.remove(*tid as u64);
                        }
                    } else {
                        g.index.remove(c.subject as u64);
                        g.pseudonyms.remove(&(c.subject as u64));
                    }
                }
            }
        }
        g.generation = upto;
        self.stats
            .followed
            .fetch_add(changes.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(true)
    }

    /// The generation a loaded gallery's index is at (`None` while it is not loaded).
    pub fn loaded_generation(&self, gallery: &str) -> Option<i64> {
        self.loaded_entry(gallery)
            .map(|lg| lg.read().unwrap_or_else(|p| p.into_inner()).generation)
    }

    /// Follow the changes other nodes commit as they are committed, until `stop` is set: each
    /// notice of the backend's change feed brings the loaded galleries it names up to date, so
    /// the cost of applying a change (reading and opening an enrolled subject's templates)
    /// falls here and not on the next search. Returns at once, false, when the backend has no
    /// feed (SQLite). Blocks otherwise: run it on a thread of its own.
    ///
    /// This is a speed-up, not the guarantee: every search still reads the gallery's
    /// generation first and follows what it lacks, so no search runs on an index older than
    /// the database whether or not a notice arrived. When the feed breaks (its connection lost,
    /// a failover), notices sent meanwhile are lost: it is reopened (every `retry` until it
    /// opens), and every loaded gallery caught up from the recorded changes. Problems go to
    /// `report`; none ends the loop.
    pub fn follow_notices(
        &self,
        stop: &std::sync::atomic::AtomicBool,
        retry: std::time::Duration,
        report: &mut dyn FnMut(&GalleryError),
    ) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        // How often the stop flag is looked at while nothing happens.
        const TICK: std::time::Duration = std::time::Duration::from_millis(200);
        let mut feed: Option<Box<dyn backend::ChangeNotices>> = None;
        while !stop.load(Relaxed) {
            let galleries = match feed.as_mut() {
                Some(f) => match f.wait(TICK) {
                    Ok(g) => g,
                    Err(e) => {
                        report(&e);
                        feed = None;
                        continue;
                    }
                },
                None => match self.backend.change_notices() {
                    Ok(None) => return false,
                    Ok(Some(f)) => {
                        feed = Some(f);
                        // Whatever was notified while there was no feed.
                        let mut all: Vec<String> = self
                            .loaded
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .keys()
                            .cloned()
                            .collect();
                        all.sort();
                        all
                    }
                    Err(e) => {
                        report(&e);
                        let until = std::time::Instant::now() + retry;
                        while !stop.load(Relaxed) && std::time::Instant::now() < until {
                            std::thread::sleep(TICK.min(retry));
                        }
                        continue;
                    }
                },
            };
            for g in galleries {
                // Only galleries this node searches are kept current; a notice for one it has
                // not loaded (or that a policy change dropped) costs nothing.
                if self.loaded_entry(&g).is_none() {
                    continue;
                }
                if let Err(e) = self.load(&g) {
                    report(&e);
                }
            }
        }
        true
    }

    /// How often galleries were loaded whole, and how many changes were followed instead.
    pub fn load_stats(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.stats.reloads.load(Relaxed),
            self.stats.followed.load(Relaxed),
        )
    }

    /// An exact (f32 in memory) or HNSW index with the subject pseudonyms and the most templates
    /// any subject has: subjects and wrapped keys read into maps, each key unwrapped once, then
    /// the templates streamed and decrypted in chunks.
    pub(super) fn load_full(
        &self,
        gallery: &str,
        dim: usize,
        hnsw_params: Option<HnswParams>,
    ) -> Result<LoadedIndex> {
        // The subjects and the wrapped keys are read at the same time (separate stores).
        let (wrapped, subjects) = std::thread::scope(|sc| {
            let keys_reader = sc.spawn(|| self.wrapped_keys(gallery));
            let subjects = (|| -> Result<IdMap<i64, ([u8; 32], i64)>> {
                let mut out = IdMap::default();
                self.backend
                    .scan_subjects(gallery, &mut |id, ps, expires| {
                        out.insert(id, (ps, expires));
                        true
                    })?;
                Ok(out)
            })();
            let wrapped = keys_reader
                .join()
                .map_err(|_| GalleryError::Invalid("key reader thread panicked".into()))?;
            Ok::<_, GalleryError>((wrapped?, subjects?))
        })?;
        // Unwrap each subject's key once, in parallel. A subject without a key has been erased:
        // it is skipped, not an error.
        let subject_list: Vec<(i64, [u8; 32])> =
            subjects.iter().map(|(id, (ps, _))| (*id, *ps)).collect();
        let dks: IdMap<i64, SecretKey> = subject_list
            .par_iter()
            .filter_map(|(sid, ps)| {
                let w = wrapped.get(ps)?;
                Some(
                    self.wrapper
                        .unwrap_key(&aad("subject-key", gallery, ps), w)
                        .map(|k| (*sid, k)),
                )
            })
            .collect::<Result<_>>()?;
        drop(wrapped);
        // Templates stream from storage in chunks: one thread reads the next chunk while the
        // others decrypt the current one straight into a flat, zeroised-on-drop buffer. No copy
        // of the whole sealed gallery is ever held.
        let mut pseudonyms: IdMap<u64, [u8; 32]> =
            IdMap::with_capacity_and_hasher(subjects.len(), Default::default());
        let mut per_subject: IdMap<i64, usize> =
            IdMap::with_capacity_and_hasher(subjects.len(), Default::default());
        let mut exact = ExactIndex::new(dim);
        if hnsw_params.is_none() {
            exact.reserve(subjects.len());
        }
        // Only the HNSW build needs every template at once.
        let mut all: Zeroizing<Vec<f32>> = Zeroizing::new(Vec::new());
        let mut all_rows: Vec<(u64, i64)> = Vec::new();
        std::thread::scope(|sc| -> Result<()> {
            type Sealed = (i64, Vec<u8>);
            let rx = chunked_reader::<Sealed>(sc, move |sink| {
                self.backend
                    .scan_templates(gallery, &mut |sid, sealed| sink((sid, sealed)))
            });
            type Decrypted = (Vec<Sealed>, Vec<bool>, Zeroizing<Vec<f32>>);
            let (btx, brx) = std::sync::mpsc::sync_channel::<Decrypted>(1);
            let (subjects, exact, pseudonyms, per_subject, all, all_rows) = (
                &subjects,
                &mut exact,
                &mut pseudonyms,
                &mut per_subject,
                &mut all,
                &mut all_rows,
            );
            let hnsw = hnsw_params.is_some();
            let builder = sc.spawn(move || {
                for (chunk, ok, flat) in brx {
                    for (k, ((sid, _), ok)) in chunk.iter().zip(&ok).enumerate() {
                        if !*ok {
                            continue;
                        }
                        let Some((ps, exp)) = subjects.get(sid) else {
                            continue;
                        };
                        *per_subject.entry(*sid).or_default() += 1;
                        let v = &flat[k * dim..(k + 1) * dim];
                        pseudonyms.insert(*sid as u64, *ps);
                        if hnsw {
                            all.extend_from_slice(v);
                            all_rows.push((*sid as u64, *exp));
                        } else {
                            exact.push(*sid as u64, v, *exp);
                        }
                    }
                }
            });
            for chunk in rx {
                let chunk = chunk?;
                let mut flat: Zeroizing<Vec<f32>> = Zeroizing::new(vec![0f32; chunk.len() * dim]);
                let ok: Vec<bool> = chunk
                    .par_iter()
                    .zip(flat.par_chunks_mut(dim.max(1)))
                    .map_init(
                        || TemplateOpener::new(gallery, dim),
                        |opener, ((sid, sealed), out)| -> Result<bool> {
                            let (Some(dk), Some((ps, _))) = (dks.get(sid), subjects.get(sid))
                            else {
                                return Ok(false);
                            };
                            opener.open(dk, ps, sealed, out)?;
                            Ok(true)
                        },
                    )
                    .collect::<Result<_>>()?;
                // The index is built on its own thread while the next chunk decrypts.
                if btx.send((chunk, ok, flat)).is_err() {
                    break;
                }
            }
            drop(btx);
            builder
                .join()
                .map_err(|_| GalleryError::Invalid("index builder thread panicked".into()))?;
            Ok(())
        })?;
        let index: Box<dyn SearchIndex> = match hnsw_params {
            None => Box::new(exact),
            Some(params) => {
                let mut h = HnswIndex::new(dim, params, all_rows.len());
                let rows: Vec<(u64, &[f32], i64)> = all_rows
                    .iter()
                    .enumerate()
                    .map(|(k, (id, e))| (*id, &all[k * dim..(k + 1) * dim], *e))
                    .collect();
                h.extend(&rows);
                Box::new(h)
            }
        };
        drop(all);
        let max_per_subject = per_subject.values().copied().max().unwrap_or(1);
        Ok((index, pseudonyms, max_per_subject))
    }

    /// A compact index, built from one streaming join of templates, subjects and wrapped keys:
    /// no whole-gallery map is ever held, so loading 10^8 templates needs little more memory than
    /// the index itself (152 bytes a 128-D template). Each template's key is unwrapped on its own
    /// (one extra AEAD per template) instead of once per subject through a map.
    pub(super) fn load_compact(&self, gallery: &str, dim: usize) -> Result<(ExactIndex, usize)> {
        // Exact sizes first: the index reserves once (growing by doubling could need twice the
        // memory at 10^8).
        let (templates, max_per_subject) = self.backend.template_counts(gallery)?;
        let mut index = ExactIndex::compact(dim);
        index.reserve(templates as usize);
        std::thread::scope(|sc| -> Result<()> {
            let rx = chunked_reader::<KeyedTemplate>(sc, move |sink| {
                self.backend.scan_keyed_templates(gallery, sink)
            });
            let key_aad = aad("subject-key", gallery, b"");
            for chunk in rx {
                let chunk = chunk?;
                let mut flat: Zeroizing<Vec<f32>> = Zeroizing::new(vec![0f32; chunk.len() * dim]);
                chunk
                    .par_iter()
                    .zip(flat.par_chunks_mut(dim.max(1)))
                    .try_for_each_init(
                        || (key_aad.clone(), TemplateOpener::new(gallery, dim)),
                        |(ka, opener), (t, out)| -> Result<()> {
                            ka.truncate(key_aad.len());
                            ka.extend_from_slice(&t.pseudonym);
                            let dk = self.wrapper.unwrap_key(ka, &t.wrapped)?;
                            opener.open(&dk, &t.pseudonym, &t.sealed, out)
                        },
                    )?;
                for (k, t) in chunk.iter().enumerate() {
                    index.push(t.id as u64, &flat[k * dim..(k + 1) * dim], t.expires);
                }
            }
            Ok(())
        })?;
        Ok((index, max_per_subject.unwrap_or(1).max(1) as usize))
    }

    /// Load a gallery's templates into memory now (servers do this at start-up).
    /// Returns (templates, memory bytes, whether the memory is locked against swap).
    pub fn preload(&self, gallery: &str) -> Result<(usize, usize, bool)> {
        let lg = self.load(gallery)?;
        let lg = lg.read().unwrap_or_else(|p| p.into_inner());
        Ok((lg.index.len(), lg.index.memory_bytes(), lg.memory_locked))
    }
}
