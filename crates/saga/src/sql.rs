//! SQL shared by the PostgreSQL and SQLite stores: the same statements run on both.

/// Columns of a saga row.
pub(crate) const SAGA_COLS: &str = "seq, id, name, version, idem_key, status, phase, step_cursor, \
attempt, in_flight, paused, cancel_requested, state, wake_at, lease_until, epoch, wait_events, \
event_name, event_payload, resolution, reason, resource, resource_held, created_at, updated_at";

pub(crate) const INSERT: &str = "INSERT INTO saga_instances (id, name, version, idem_key, status, \
phase, step_cursor, attempt, in_flight, recovered, paused, cancel_requested, state, wake_at, \
lease_until, epoch, resource_held, created_at, updated_at) VALUES ($1, $2, $3, $4, 'running', \
'forward', 0, 0, $8, FALSE, FALSE, FALSE, $5, $6, $7, $9, FALSE, $6, $6) \
ON CONFLICT (name, idem_key) DO NOTHING RETURNING seq";

pub(crate) const FIND_BY_KEY: &str =
    "SELECT id, seq FROM saga_instances WHERE name = $1 AND idem_key = $2";

pub(crate) const ACTIVE_VERSIONS: &str = "SELECT DISTINCT name, version FROM saga_instances \
WHERE status IN ('running', 'waiting', 'parked')";

#[cfg(feature = "sqlite")]
pub(crate) const UPDATE_SET: &str = "status = $3, phase = $4, step_cursor = $5, attempt = $6, \
in_flight = $7, state = $8, wake_at = $9, lease_until = $10, wait_events = $11, reason = $12, \
resource = $13, resource_held = $14, updated_at = $15, \
cancel_requested = (cancel_requested AND NOT $16), event_name = NULL, event_payload = NULL, \
resolution = NULL";

#[cfg(feature = "sqlite")]
pub(crate) const INSERT_LOG: &str = "INSERT INTO saga_step_log (saga_id, at, step, phase, attempt, \
outcome, detail, epoch)";

/// Makes the oldest saga queued on a free resource due now. Run in the transaction that
/// releases the resource, and in the one that queues a saga (so a release that committed
/// while the saga was finding the resource busy is not missed); a no-op while a holder exists.
pub(crate) const WAKE_NEXT: &str = "UPDATE saga_instances SET wake_at = $2 WHERE id = \
(SELECT id FROM saga_instances WHERE resource = $1 AND NOT resource_held AND status = 'running' \
AND NOT paused ORDER BY seq LIMIT 1) AND wake_at > $2 AND NOT EXISTS (SELECT 1 FROM \
saga_instances h WHERE h.resource = $1 AND h.resource_held)";

pub(crate) const ACQUIRE: &str = "UPDATE saga_instances SET resource = $3, resource_held = TRUE \
WHERE id = $1 AND epoch = $2 AND NOT EXISTS (SELECT 1 FROM saga_instances o WHERE \
o.resource = $3 AND o.id <> $1 AND (o.resource_held OR (o.seq < $4 AND o.status = 'running' \
AND NOT o.paused)))";

pub(crate) const EXISTS: &str = "SELECT 1 FROM saga_instances WHERE id = $1";

pub(crate) const LOG: &str = "SELECT saga_id, at, step, phase, attempt, outcome, detail, epoch \
FROM saga_step_log WHERE saga_id = $1 ORDER BY id";

pub(crate) const COUNTS: &str = "SELECT status, COUNT(*) AS n FROM saga_instances \
WHERE status IN ('running', 'waiting', 'parked') GROUP BY status";

pub(crate) const PAUSE: &str = "UPDATE saga_instances SET paused = TRUE, updated_at = $2 \
WHERE id = $1 AND status IN ('running', 'waiting', 'parked') \
RETURNING phase, attempt, epoch";
pub(crate) const RESUME: &str = "UPDATE saga_instances SET paused = FALSE, wake_at = CASE WHEN \
status = 'running' AND wake_at > $2 THEN $2 ELSE wake_at END, updated_at = $2 \
WHERE id = $1 AND paused RETURNING phase, attempt, epoch";
pub(crate) const RETRY_NOW: &str = "UPDATE saga_instances SET attempt = CASE WHEN status = \
'parked' THEN 0 ELSE attempt END, status = 'running', wake_at = $2, updated_at = $2 \
WHERE id = $1 AND status IN ('running', 'parked') AND lease_until <= $2 \
RETURNING phase, attempt, epoch";
pub(crate) const CANCEL: &str = "UPDATE saga_instances SET cancel_requested = TRUE, \
status = 'running', wake_at = $2, updated_at = $2 WHERE id = $1 \
AND status IN ('running', 'waiting', 'parked') AND phase = 'forward' \
RETURNING phase, attempt, epoch";
pub(crate) const RESOLVE: &str = "UPDATE saga_instances SET resolution = $3, status = 'running', \
wake_at = $2, updated_at = $2 WHERE id = $1 AND status = 'parked' AND in_flight \
AND phase = 'forward' RETURNING phase, attempt, epoch";
pub(crate) const OP_LOG: &str = "INSERT INTO saga_step_log (saga_id, at, step, phase, attempt, \
outcome, detail, epoch) VALUES ($1, $2, '-', $3, $4, $5, NULL, $6)";

pub(crate) fn int<T: TryFrom<i64>>(v: i64, what: &str) -> Result<T, crate::Error> {
    T::try_from(v).map_err(|_| crate::Error::Corrupt(format!("{what} out of range: {v}")))
}

pub(crate) fn uuid(s: &str) -> Result<uuid::Uuid, crate::Error> {
    uuid::Uuid::parse_str(s).map_err(|_| crate::Error::Corrupt(format!("saga id {s:?}")))
}

/// Implements the parts of [`SagaStore`](crate::SagaStore) whose SQL is the same on both
/// backends, as inherent methods of the store type.
macro_rules! shared_sql_store {
    ($store:ty, $db:ty) => {
        impl $store {
            fn decode_saga(
                row: &<$db as sqlx::Database>::Row,
            ) -> Result<$crate::SagaRecord, $crate::Error> {
                use sqlx::Row as _;
                use $crate::sql::{int, uuid};
                let id: String = row.try_get("id")?;
                let event_name: Option<String> = row.try_get("event_name")?;
                let event_payload: Option<String> = row.try_get("event_payload")?;
                let resolution: Option<String> = row.try_get("resolution")?;
                let wait: Option<String> = row.try_get("wait_events")?;
                Ok($crate::SagaRecord {
                    id: uuid(&id)?,
                    name: row.try_get("name")?,
                    version: int(row.try_get::<i64, _>("version")?, "version")?,
                    key: row.try_get("idem_key")?,
                    seq: row.try_get("seq")?,
                    status: $crate::Status::parse(&row.try_get::<String, _>("status")?)?,
                    phase: $crate::Phase::parse(&row.try_get::<String, _>("phase")?)?,
                    cursor: int(row.try_get::<i64, _>("step_cursor")?, "cursor")?,
                    attempt: int(row.try_get::<i64, _>("attempt")?, "attempt")?,
                    in_flight: row.try_get("in_flight")?,
                    paused: row.try_get("paused")?,
                    cancel_requested: row.try_get("cancel_requested")?,
                    state: row.try_get("state")?,
                    wake_at: row.try_get("wake_at")?,
                    lease_until: row.try_get("lease_until")?,
                    epoch: row.try_get("epoch")?,
                    wait_events: $crate::store::decode_events(wait.as_deref()),
                    event: match (event_name, event_payload) {
                        (Some(name), Some(payload)) => {
                            Some($crate::DeliveredEvent { name, payload })
                        }
                        _ => None,
                    },
                    resolution: resolution
                        .as_deref()
                        .map($crate::Resolution::parse)
                        .transpose()?,
                    reason: row.try_get("reason")?,
                    resource: row.try_get("resource")?,
                    resource_held: row.try_get("resource_held")?,
                    created_at: row.try_get("created_at")?,
                    updated_at: row.try_get("updated_at")?,
                })
            }

            /// Inserts; the new saga's start order, or `None` when the key exists.
            async fn insert_on<'e, E>(
                exec: E,
                new: &$crate::NewSaga,
            ) -> Result<Option<i64>, $crate::Error>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                use sqlx::Row as _;
                let leased = new.lease_until > 0;
                let row = sqlx::query($crate::sql::INSERT)
                    .bind(new.id.to_string())
                    .bind(&new.name)
                    .bind(i64::from(new.version))
                    .bind(&new.key)
                    .bind(&new.state)
                    .bind(new.now)
                    .bind(new.lease_until)
                    .bind(leased)
                    .bind(i64::from(leased))
                    .fetch_optional(exec)
                    .await?;
                Ok(row.map(|r| r.try_get::<i64, _>("seq")).transpose()?)
            }

            async fn start_on(
                conn: &mut <$db as sqlx::Database>::Connection,
                new: &$crate::NewSaga,
            ) -> Result<$crate::Started, $crate::Error> {
                if let Some(seq) = Self::insert_on(&mut *conn, new).await? {
                    return Ok($crate::Started {
                        id: new.id,
                        seq,
                        created: true,
                    });
                }
                Self::find_on(&mut *conn, new).await
            }

            async fn find_on<'e, E>(
                exec: E,
                new: &$crate::NewSaga,
            ) -> Result<$crate::Started, $crate::Error>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                use sqlx::Row as _;
                let row = sqlx::query($crate::sql::FIND_BY_KEY)
                    .bind(&new.name)
                    .bind(&new.key)
                    .fetch_one(exec)
                    .await?;
                let id: String = row.try_get("id")?;
                Ok($crate::Started {
                    id: $crate::sql::uuid(&id)?,
                    seq: row.try_get("seq")?,
                    created: false,
                })
            }

            async fn active_versions_sql(&self) -> Result<Vec<(String, u32)>, $crate::Error> {
                use sqlx::Row as _;
                let rows = sqlx::query($crate::sql::ACTIVE_VERSIONS)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok((
                            r.try_get::<String, _>("name")?,
                            $crate::sql::int(r.try_get::<i64, _>("version")?, "version")?,
                        ))
                    })
                    .collect()
            }

            async fn wake_next_on<'e, E>(
                exec: E,
                resource: &str,
                now: i64,
            ) -> Result<(), $crate::Error>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                sqlx::query($crate::sql::WAKE_NEXT)
                    .bind(resource)
                    .bind(now)
                    .execute(exec)
                    .await?;
                Ok(())
            }

            async fn acquire_sql(
                &self,
                id: uuid::Uuid,
                epoch: i64,
                seq: i64,
                resource: &str,
            ) -> Result<bool, $crate::Error> {
                let r = sqlx::query($crate::sql::ACQUIRE)
                    .bind(id.to_string())
                    .bind(epoch)
                    .bind(resource)
                    .bind(seq)
                    .execute(&self.pool)
                    .await;
                match r {
                    Ok(r) => Ok(r.rows_affected() == 1),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }

            /// Hands `event` with `payload` to saga `id` inside the caller's transaction,
            /// so the delivery commits (or not) together with the caller's rows: a
            /// consumer records the message that brought the event and hands it on in
            /// one commit. Otherwise as [`Engine::deliver`](crate::Engine::deliver);
            /// call [`Engine::wake`](crate::Engine::wake) after committing, so this
            /// process's workers run the saga at once.
            ///
            /// # Errors
            /// [`Error::InvalidEvent`](crate::Error::InvalidEvent),
            /// [`Error::NotFound`](crate::Error::NotFound),
            /// [`Error::Serde`](crate::Error::Serde),
            /// [`Error::Backend`](crate::Error::Backend).
            ///
            /// # Cancel safety
            /// Writes only inside `tx`; nothing is visible unless the caller commits.
            pub async fn deliver_in(
                &self,
                tx: &mut sqlx::Transaction<'_, $db>,
                id: uuid::Uuid,
                event: &str,
                payload: &impl serde::Serialize,
            ) -> Result<$crate::Delivery, $crate::Error> {
                $crate::step::check_event(event)?;
                let payload = serde_json::to_string(payload)?;
                Self::deliver_on(tx, id, event, &payload, self.clock.now_ms()).await
            }

            /// Hands an event to a waiting saga on `conn`: a pooled connection or a
            /// transaction's. One round trip when the saga waits for it.
            async fn deliver_on(
                conn: &mut <$db as sqlx::Database>::Connection,
                id: uuid::Uuid,
                event: &str,
                payload: &str,
                now: i64,
            ) -> Result<$crate::Delivery, $crate::Error> {
                let r = sqlx::query(DELIVER)
                    .bind(id.to_string())
                    .bind(event)
                    .bind(payload)
                    .bind(now)
                    .execute(&mut *conn)
                    .await?;
                if r.rows_affected() == 1 {
                    return Ok($crate::Delivery::Accepted);
                }
                let exists = sqlx::query($crate::sql::EXISTS)
                    .bind(id.to_string())
                    .fetch_optional(&mut *conn)
                    .await?
                    .is_some();
                if exists {
                    Ok($crate::Delivery::NotWaiting)
                } else {
                    Err($crate::Error::NotFound(id))
                }
            }

            async fn get_sql(
                &self,
                id: uuid::Uuid,
            ) -> Result<Option<$crate::SagaRecord>, $crate::Error> {
                let sql = format!(
                    "SELECT {} FROM saga_instances WHERE id = $1",
                    $crate::sql::SAGA_COLS
                );
                let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(id.to_string())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::decode_saga).transpose()
            }

            async fn list_sql(
                &self,
                f: &$crate::ListFilter,
            ) -> Result<Vec<$crate::SagaRecord>, $crate::Error> {
                let sql = format!(
                    "SELECT {} FROM saga_instances WHERE ($1 IS NULL OR status = $1) \
                     AND ($2 IS NULL OR name = $2) AND seq >= $3 ORDER BY seq LIMIT CAST($4 AS BIGINT)",
                    $crate::sql::SAGA_COLS
                );
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(f.status.map(|s| s.as_str().to_owned()))
                    .bind(f.name.clone())
                    .bind(f.after_seq.unwrap_or(i64::MIN))
                    .bind(i64::from(f.limit.unwrap_or(100)))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(Self::decode_saga).collect()
            }

            async fn log_sql(
                &self,
                id: uuid::Uuid,
            ) -> Result<Vec<$crate::LogEntry>, $crate::Error> {
                use sqlx::Row as _;
                let rows = sqlx::query($crate::sql::LOG)
                    .bind(id.to_string())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::LogEntry {
                            saga_id: $crate::sql::uuid(&r.try_get::<String, _>("saga_id")?)?,
                            at: r.try_get("at")?,
                            step: r.try_get("step")?,
                            phase: $crate::Phase::parse(&r.try_get::<String, _>("phase")?)?,
                            attempt: $crate::sql::int(r.try_get::<i64, _>("attempt")?, "attempt")?,
                            outcome: r.try_get("outcome")?,
                            detail: r.try_get("detail")?,
                            epoch: r.try_get("epoch")?,
                        })
                    })
                    .collect()
            }

            async fn counts_sql(&self) -> Result<Vec<($crate::Status, u64)>, $crate::Error> {
                use sqlx::Row as _;
                let rows = sqlx::query($crate::sql::COUNTS)
                    .fetch_all(&self.pool)
                    .await?;
                let mut out: Vec<($crate::Status, u64)> = [
                    $crate::Status::Running,
                    $crate::Status::Waiting,
                    $crate::Status::Parked,
                ]
                .into_iter()
                .map(|s| (s, 0))
                .collect();
                for r in &rows {
                    let st = $crate::Status::parse(&r.try_get::<String, _>("status")?)?;
                    let n: i64 = r.try_get("n")?;
                    if let Some(slot) = out.iter_mut().find(|(s, _)| *s == st) {
                        slot.1 = $crate::sql::int(n, "count")?;
                    }
                }
                Ok(out)
            }

            async fn operate_on(
                tx: &mut sqlx::Transaction<'static, $db>,
                id: uuid::Uuid,
                op: $crate::OperatorOp,
                now: i64,
            ) -> Result<bool, $crate::Error> {
                use sqlx::Row as _;
                use $crate::OperatorOp as Op;
                let q = match op {
                    Op::Pause => sqlx::query($crate::sql::PAUSE),
                    Op::Resume => sqlx::query($crate::sql::RESUME),
                    Op::RetryNow => sqlx::query($crate::sql::RETRY_NOW),
                    Op::Cancel => sqlx::query($crate::sql::CANCEL),
                    Op::Resolve($crate::Resolution::Unknown) => return Ok(false),
                    Op::Resolve(_) => sqlx::query($crate::sql::RESOLVE),
                };
                let mut q = q.bind(id.to_string()).bind(now);
                if let Op::Resolve(r) = op {
                    q = q.bind(r.as_str());
                }
                let Some(row) = q.fetch_optional(&mut **tx).await? else {
                    return Ok(false);
                };
                let phase: String = row.try_get("phase")?;
                let attempt: i64 = row.try_get("attempt")?;
                let epoch: i64 = row.try_get("epoch")?;
                sqlx::query($crate::sql::OP_LOG)
                    .bind(id.to_string())
                    .bind(now)
                    .bind(phase)
                    .bind(attempt)
                    .bind(op.name())
                    .bind(epoch)
                    .execute(&mut **tx)
                    .await?;
                Ok(true)
            }
        }
    };
}

pub(crate) use shared_sql_store;

/// Binds the checkpoint's row values as `$1..$16` in [`UPDATE_SET`] order.
macro_rules! bind_checkpoint {
    ($q:expr, $cp:expr) => {
        $q.bind($cp.id.to_string())
            .bind($cp.epoch)
            .bind($cp.status.as_str())
            .bind($cp.phase.as_str())
            .bind(i64::from($cp.cursor))
            .bind(i64::from($cp.attempt))
            .bind($cp.in_flight)
            .bind(&$cp.state)
            .bind($cp.wake_at)
            .bind($cp.lease_until)
            .bind($crate::store::encode_events(&$cp.wait_events))
            .bind(&$cp.reason)
            .bind(&$cp.resource)
            .bind($cp.resource_held)
            .bind($cp.now)
            .bind($cp.clear_cancel)
    };
}

pub(crate) use bind_checkpoint;
