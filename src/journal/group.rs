//! Group commit: the journal's writes share their fsyncs.
//!
//! Every write is queued; a leader (a blocking task, one at a time on its way) takes the
//! connection, runs every write queued by then in one transaction (`BEGIN IMMEDIATE` …
//! `COMMIT`: one fsync), each write in its own savepoint, and only then answers their callers.
//! So a caller still returns only once a commit that holds its write is on disk — an
//! [`Obtained`](super::Obtained) still exists only once its answer is durable — while C
//! concurrent refreshes wait for about one fsync instead of C in a row. The slower the disk,
//! the more writes queue during a commit, and the larger the next group.
//!
//! - A write whose closure fails (or panics) is rolled back to its savepoint and fails alone;
//!   the others of its group commit.
//! - When the group cannot begin or commit, every write of the group fails, and the journal's
//!   last write says so (`/readyz`).
//! - Order: the queue is taken while the connection is held, so a write queued before another
//!   is in the same group (run first) or in an earlier one. Two writes one task issues in
//!   sequence stay in order: the second is queued only once the first has returned.

use super::{JournalError, WriteOutcome};
use crate::clock::SharedClock;
use rusqlite::Connection;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// What a write's caller is answered with, given how its group ended (`Err`: why the group
/// did not commit).
type Answer = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// A write run inside its group's transaction, waiting for the group's end.
struct Ran {
    /// Answers the caller once the group has ended.
    answer: Answer,
    /// Why the write failed alone (rolled back to its savepoint), if it did.
    failed: Option<String>,
}

/// A queued write, whatever its result type.
trait QueuedWrite: Send {
    /// Runs the write in its own savepoint of the group's transaction.
    fn run(self: Box<Self>, conn: &Connection) -> Ran;
    /// Answers the caller without running the write: its group could not run it.
    fn refuse(self: Box<Self>, why: &str);
}

/// A write and the caller waiting for it.
struct Write<T, F> {
    write: F,
    caller: oneshot::Sender<Result<T, JournalError>>,
}

impl<T, F> QueuedWrite for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Ran {
        let Write { write, caller } = *self;
        let result = savepoint(conn, write);
        let failed = result.as_ref().err().map(ToString::to_string);
        let answer: Answer = Box::new(move |group| {
            let answer = result.and_then(|value| group.map(|()| value).map_err(group_error));
            // A caller that stopped waiting needs no answer.
            let _ = caller.send(answer);
        });
        Ran { answer, failed }
    }

    fn refuse(self: Box<Self>, why: &str) {
        let _ = self.caller.send(Err(group_error(why)));
    }
}

/// The error every write of a group that did not commit fails with.
fn group_error(why: &str) -> JournalError {
    JournalError::Db(why.to_string())
}

/// Runs `write` in its own savepoint: all its statements land, or — when it fails or panics —
/// none does. Inside a group's transaction it is one write of the group; on its own it is a
/// transaction.
pub(super) fn savepoint<T>(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> Result<T, JournalError>,
) -> Result<T, JournalError> {
    conn.execute_batch("SAVEPOINT journal_write")?;
    let result = catch_unwind(AssertUnwindSafe(|| write(conn))).unwrap_or_else(|_| {
        Err(JournalError::Db(
            "a journal write panicked; it was rolled back".into(),
        ))
    });
    let end = match result {
        Ok(_) => "RELEASE journal_write",
        Err(_) => "ROLLBACK TO journal_write; RELEASE journal_write",
    };
    if let Err(e) = conn.execute_batch(end) {
        // Whether or not the write was undone, the transaction around it cannot be trusted
        // with it: end the transaction (a group sees it ended and fails every write).
        let _ = conn.execute_batch("ROLLBACK");
        return Err(result.err().unwrap_or_else(|| e.into()));
    }
    result
}

/// The writes waiting for a group.
struct Queue {
    writes: Vec<Box<dyn QueuedWrite>>,
    /// A leader is on its way that has not taken the queue yet: it takes every write queued
    /// until then, so a write queued meanwhile needs no leader of its own (and the journal
    /// needs at most two blocking threads: a group running, a leader waiting for it).
    leader: bool,
}

/// The journal's queue of writes and how its last group ended.
pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    last: Mutex<Option<WriteOutcome>>,
    /// Groups that ran, for tests to see writes share a commit.
    #[cfg(test)]
    groups: std::sync::atomic::AtomicUsize,
}

impl GroupCommit {
    /// An empty queue.
    pub(super) fn new() -> GroupCommit {
        GroupCommit {
            queue: Mutex::new(Queue {
                writes: Vec::new(),
                leader: false,
            }),
            last: Mutex::new(None),
            #[cfg(test)]
            groups: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// How the last group ended; `None` before the first.
    pub(super) fn last(&self) -> Option<WriteOutcome> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Queues `write`; the receiver gets its result once its group has ended. `true` when no
    /// leader is on its way: the caller must start one.
    fn enqueue<T, F>(&self, write: F) -> (oneshot::Receiver<Result<T, JournalError>>, bool)
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    {
        let (caller, answer) = oneshot::channel();
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.writes.push(Box::new(Write { write, caller }));
        let lead = !queue.leader;
        queue.leader = true;
        (answer, lead)
    }

    /// Queues `write` and returns once the group that holds it has ended: `Ok` only when that
    /// group's commit is on disk.
    pub(super) async fn write<T, F>(
        self: &Arc<Self>,
        conn: &Arc<Mutex<Connection>>,
        clock: &SharedClock,
        write: F,
    ) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    {
        let (answer, lead) = self.enqueue(write);
        if lead {
            let leader = Leader {
                group: Arc::clone(self),
                conn: Arc::clone(conn),
                clock: Arc::clone(clock),
                started: false,
            };
            // The group runs to its end even when this caller stops waiting, as a commit would.
            drop(tokio::task::spawn_blocking(move || leader.lead()));
        }
        answer.await.unwrap_or_else(|_| {
            Err(JournalError::Db(
                "the journal write was lost: its group ended abnormally".into(),
            ))
        })
    }

    /// Runs every queued write in one transaction, then answers their callers.
    fn commit(&self, conn: &Mutex<Connection>, clock: &SharedClock) {
        let Ok(conn) = conn.lock() else {
            self.fail(self.take(), POISONED.into(), clock);
            return;
        };
        // Taken while the connection is held: groups run in the order they take the queue.
        let writes = self.take();
        #[cfg(test)]
        self.groups
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            self.fail(writes, e.to_string(), clock);
            return;
        }
        let mut writes = writes.into_iter();
        let mut ran = Vec::with_capacity(writes.len());
        for write in writes.by_ref() {
            ran.push(write.run(&conn));
            if conn.is_autocommit() {
                // SQLite rolled the whole transaction back after an error: what ran is gone,
                // and nothing more may run outside a transaction.
                let why = match ran.last().and_then(|r| r.failed.as_deref()) {
                    Some(failed) => format!("{ROLLED_BACK}: {failed}"),
                    None => ROLLED_BACK.into(),
                };
                for write in writes {
                    write.refuse(&why);
                }
                self.end(ran, Err(why), clock);
                return;
            }
        }
        let committed = conn.execute_batch("COMMIT").map_err(|e| {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            e.to_string()
        });
        self.end(ran, committed, clock);
    }

    /// Takes every queued write: the next write queued needs a new leader.
    fn take(&self) -> Vec<Box<dyn QueuedWrite>> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.leader = false;
        std::mem::take(&mut queue.writes)
    }

    /// Fails a group before any of its writes ran.
    fn fail(&self, writes: Vec<Box<dyn QueuedWrite>>, why: String, clock: &SharedClock) {
        for write in writes {
            write.refuse(&why);
        }
        self.end(Vec::new(), Err(why), clock);
    }

    /// Ends a group: remembers how it went and answers the callers of the writes that ran.
    fn end(&self, ran: Vec<Ran>, outcome: Result<(), String>, clock: &SharedClock) {
        // `/readyz` hears of any failure in the group: its commit's, or a write's alone.
        let error = match &outcome {
            Err(why) => Some(group_error(why).to_string()),
            Ok(()) => ran.iter().rev().find_map(|r| r.failed.clone()),
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(WriteOutcome {
            at: clock.now(),
            error,
        });
        let group = outcome.as_ref().map(|_| ()).map_err(String::as_str);
        for r in ran {
            (r.answer)(group);
        }
    }
}

/// The blocking task that runs the next group.
struct Leader {
    group: Arc<GroupCommit>,
    conn: Arc<Mutex<Connection>>,
    clock: SharedClock,
    started: bool,
}

impl Leader {
    fn lead(mut self) {
        self.started = true;
        self.group.commit(&self.conn, &self.clock);
    }
}

impl Drop for Leader {
    /// A leader the runtime drops without running it (it is shutting down) fails the writes
    /// it would have taken, rather than leave their callers waiting and later writes without a
    /// leader.
    fn drop(&mut self) {
        if !self.started {
            self.group
                .fail(self.group.take(), NOT_RUN.into(), &self.clock);
        }
    }
}

const POISONED: &str = "journal connection poisoned by a panic";
const ROLLED_BACK: &str = "the journal's transaction was rolled back after an error";
const NOT_RUN: &str = "the journal's writer did not run: the runtime is shutting down";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, JournalKey};
    use rusqlite::{OptionalExtension, params};
    use std::sync::atomic::Ordering;

    fn journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), Some(&JournalKey::random().unwrap())).unwrap();
        (dir, j)
    }

    /// A write that sets `key` in the journal's `meta` table.
    fn set(
        key: &str,
        value: &str,
    ) -> impl FnOnce(&Connection) -> Result<(), JournalError> + Send + 'static {
        let (key, value) = (key.to_string(), value.to_string());
        move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = ?2",
                params![key, value],
            )?;
            Ok(())
        }
    }

    fn get(j: &Journal, key: &str) -> Option<String> {
        j.with_conn(|c| {
            Ok(
                c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                    .optional()?,
            )
        })
        .unwrap()
    }

    fn groups(j: &Journal) -> usize {
        j.writes.groups.load(Ordering::SeqCst)
    }

    /// Queues a write without starting a leader: the test runs the group.
    fn queue<T: Send + 'static>(
        j: &Journal,
        write: impl FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    ) -> oneshot::Receiver<Result<T, JournalError>> {
        j.writes.enqueue(write).0
    }

    /// Runs the queued writes as one group, on this thread.
    fn commit(j: &Journal) {
        j.writes.commit(&j.conn, &j.clock);
    }

    fn in_transaction(j: &Journal) -> bool {
        j.with_conn(|c| Ok(!c.is_autocommit())).unwrap()
    }

    #[test]
    fn a_failed_write_rolls_back_alone_and_the_others_of_its_group_commit() {
        let (_dir, j) = journal();
        let first = queue(&j, set("a", "1"));
        let failing = queue(&j, |c| {
            set("b", "2")(c)?;
            Err::<(), _>(JournalError::Db("refused".into()))
        });
        let last = queue(&j, set("c", "3"));
        commit(&j);
        assert_eq!(groups(&j), 1, "one transaction for the three");
        assert!(first.blocking_recv().unwrap().is_ok());
        assert!(matches!(
            failing.blocking_recv().unwrap(),
            Err(JournalError::Db(why)) if why == "refused"
        ));
        assert!(last.blocking_recv().unwrap().is_ok());
        assert_eq!(get(&j, "a").as_deref(), Some("1"));
        assert_eq!(
            get(&j, "b"),
            None,
            "the failed write's own statement is undone"
        );
        assert_eq!(get(&j, "c").as_deref(), Some("3"));
        let outcome = j.last_write().unwrap();
        assert!(
            outcome.error.unwrap().contains("refused"),
            "/readyz hears of the failure"
        );
    }

    #[test]
    fn a_failed_commit_fails_every_write_of_its_group() {
        let (_dir, j) = journal();
        // A deferred foreign key is checked at COMMIT: the commit itself fails.
        j.with_conn(|c| {
            c.execute_batch(
                "PRAGMA foreign_keys = ON;
                 CREATE TABLE parent (id INTEGER PRIMARY KEY);
                 CREATE TABLE child (parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);",
            )?;
            Ok(())
        })
        .unwrap();
        let before = queue(&j, set("a", "1"));
        let orphan = queue(&j, |c| {
            c.execute("INSERT INTO child (parent) VALUES (7)", [])?;
            Ok(())
        });
        let after = queue(&j, set("c", "3"));
        commit(&j);
        for answer in [before, orphan, after] {
            let error = answer.blocking_recv().unwrap().unwrap_err();
            assert!(error.to_string().contains("FOREIGN KEY"), "{error}");
        }
        assert_eq!(get(&j, "a"), None);
        assert_eq!(get(&j, "c"), None);
        assert!(!in_transaction(&j), "the failed group is rolled back");
        assert!(
            j.last_write()
                .unwrap()
                .error
                .unwrap()
                .contains("FOREIGN KEY")
        );
        // The next group starts clean.
        let next = queue(&j, set("d", "4"));
        commit(&j);
        assert!(next.blocking_recv().unwrap().is_ok());
        assert_eq!(get(&j, "d").as_deref(), Some("4"));
        assert_eq!(j.last_write().unwrap().error, None);
    }

    #[test]
    fn a_group_that_cannot_begin_fails_every_write() {
        let (dir, j) = journal();
        j.with_conn(|c| Ok(c.busy_timeout(std::time::Duration::ZERO)?))
            .unwrap();
        // Another connection holds the database's write lock.
        let other = Connection::open(dir.path().join(crate::journal::DB_FILE)).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let first = queue(&j, set("a", "1"));
        let second = queue(&j, set("b", "2"));
        commit(&j);
        for answer in [first, second] {
            let error = answer.blocking_recv().unwrap().unwrap_err();
            assert!(error.to_string().contains("locked"), "{error}");
        }
        assert!(j.last_write().unwrap().error.is_some());
        other.execute_batch("ROLLBACK").unwrap();
        let again = queue(&j, set("a", "1"));
        commit(&j);
        assert!(again.blocking_recv().unwrap().is_ok());
        assert_eq!(get(&j, "a").as_deref(), Some("1"));
    }

    #[tokio::test]
    async fn a_panicking_write_answers_its_caller_and_the_next_group_works() {
        let (_dir, j) = journal();
        let kept = queue(&j, set("a", "1"));
        let panicking = queue(&j, |c| -> Result<(), JournalError> {
            set("b", "2")(c)?;
            panic!("a bug in a write");
        });
        commit(&j);
        assert!(kept.await.unwrap().is_ok());
        let error = panicking.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("panicked"), "{error}");
        assert_eq!(get(&j, "a").as_deref(), Some("1"));
        assert_eq!(get(&j, "b"), None);
        assert!(!in_transaction(&j));
        // Through the whole path: the leader on a blocking thread, the caller answered.
        let error = j
            .write(|_| -> Result<(), JournalError> { panic!("another bug") })
            .await
            .unwrap_err();
        assert!(error.to_string().contains("panicked"), "{error}");
        j.heartbeat().await.unwrap();
        assert!(!in_transaction(&j));
    }

    #[test]
    fn a_leader_dropped_unrun_fails_its_writes_and_the_next_write_gets_a_leader() {
        let (_dir, j) = journal();
        let (answer, lead) = j.writes.enqueue(set("a", "1"));
        assert!(lead, "the first write starts a leader");
        let (_, lead) = j.writes.enqueue(set("b", "2"));
        assert!(!lead, "the leader on its way takes this one too");
        // What a runtime that shuts down does to a blocking task it never ran.
        drop(Leader {
            group: Arc::clone(&j.writes),
            conn: Arc::clone(&j.conn),
            clock: Arc::clone(&j.clock),
            started: false,
        });
        let error = answer.blocking_recv().unwrap().unwrap_err();
        assert!(error.to_string().contains("did not run"), "{error}");
        let (_, lead) = j.writes.enqueue(set("c", "3"));
        assert!(lead);
    }

    #[test]
    fn writes_of_one_group_run_in_the_order_they_were_queued() {
        let (_dir, j) = journal();
        let answers = [
            queue(&j, set("k", "1")),
            queue(&j, set("k", "2")),
            queue(&j, |c| {
                c.execute("UPDATE meta SET value = value || '+3' WHERE key = 'k'", [])?;
                Ok(())
            }),
        ];
        commit(&j);
        assert_eq!(groups(&j), 1);
        for answer in answers {
            assert!(answer.blocking_recv().unwrap().is_ok());
        }
        assert_eq!(get(&j, "k").as_deref(), Some("2+3"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sequential_writes_of_concurrent_tasks_stay_in_order() {
        let (_dir, j) = journal();
        let j = Arc::new(j);
        let mut tasks = tokio::task::JoinSet::new();
        for task in 0..8 {
            let j = Arc::clone(&j);
            tasks.spawn(async move {
                let key = format!("task{task}");
                for step in 0..40u32 {
                    let key = key.clone();
                    // Each write sees the one this task issued before it.
                    j.write(move |c| {
                        let previous: Option<String> = c
                            .query_row("SELECT value FROM meta WHERE key = ?1", [&key], |r| {
                                r.get(0)
                            })
                            .optional()?;
                        let expected = step.checked_sub(1).map(|s| s.to_string());
                        if previous != expected {
                            return Err(JournalError::Db(format!(
                                "{key}: step {step} saw {previous:?}"
                            )));
                        }
                        set(&key, &step.to_string())(c)
                    })
                    .await?;
                }
                Ok::<_, JournalError>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        for task in 0..8 {
            assert_eq!(get(&j, &format!("task{task}")).as_deref(), Some("39"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_all_land() {
        let (_dir, j) = journal();
        let j = Arc::new(j);
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..64 {
            let j = Arc::clone(&j);
            tasks.spawn(async move { j.begin(&format!("r{n}"), "Graph").await });
        }
        let mut answered = std::collections::HashSet::new();
        while let Some(done) = tasks.join_next().await {
            answered.insert(done.unwrap().unwrap().credential().to_string());
        }
        assert_eq!(answered.len(), 64);
        assert_eq!(j.interrupted().unwrap().len(), 64);
        assert_eq!(j.last_write().unwrap().error, None);
    }
}
