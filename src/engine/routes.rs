//! What is said about registries' routes: a pinned registry whose instance `token_url` moved,
//! a registry held back. Each is said once per change — logged, and reported on the instance
//! when `[report]` is on — remembered in the journal, and said to have ended when it no longer
//! holds. Which notices are new is decided by [`notice_changes`]; this only does the I/O.

use super::Keeper;
use crate::domain::endpoint::{Route, RouteNotice, Routes, notice_changes};
use crate::events::StateChange;

impl Keeper {
    /// Says what is new about `routes` since the journal last said it, and what ended. Without
    /// a journal (dry runs, `status`) nothing is said: the report shows the held-back lines.
    pub(super) async fn announce_routes(&self, routes: &Routes) {
        let Some(journal) = &self.journal else {
            return;
        };
        let said = match journal.route_notices() {
            Ok(said) => said,
            Err(e) => {
                tracing::warn!(event = "journal.unreadable", error = %e, "cannot read what was said about routes; saying it again");
                Default::default()
            }
        };
        let (new, ended) = notice_changes(routes, &said);
        for notice in new {
            self.say(&notice).await;
            if let Err(e) = journal.remember_route_notice(&notice).await {
                tracing::warn!(event = "journal.write_failed", registry = %notice.name, error = %e, "could not remember a route notice");
            }
        }
        for (registry, topic) in ended {
            let name = routes
                .iter()
                .find(|r| r.sys_id == registry)
                .map_or_else(|| registry.clone(), |r| r.name.clone());
            tracing::info!(event = "registry.route_restored", registry = %name, registry_sys_id = %registry, topic = topic.as_str(), "a route notice no longer holds");
            self.report(StateChange::RouteNoticeEnded {
                registry_id: registry.clone(),
                registry: name.clone(),
                topic,
            })
            .await;
            if let Err(e) = journal.forget_route_notice(&registry, topic).await {
                tracing::warn!(event = "journal.write_failed", registry = %name, error = %e, "could not forget a route notice");
            }
        }
    }

    async fn say(&self, notice: &RouteNotice) {
        match &notice.verdict {
            Ok(Route {
                moved: Some(moved), ..
            }) => {
                tracing::warn!(
                    event = "registry.token_url_moved",
                    registry = %notice.name,
                    registry_sys_id = %notice.registry,
                    pinned_host = %moved.pinned,
                    instance_host = %moved.instance,
                    "the instance's token_url of a pinned registry points elsewhere; the keeper keeps to the pin"
                );
                self.report(StateChange::TokenUrlMoved {
                    registry_id: notice.registry.clone(),
                    registry: notice.name.clone(),
                    pinned: moved.pinned.clone(),
                    instance: moved.instance.clone(),
                })
                .await;
            }
            // Only a moved pin makes a notice of a route that is followed.
            Ok(_) => {}
            Err(held) => {
                tracing::warn!(
                    event = "registry.held_back",
                    registry = %notice.name,
                    registry_sys_id = %notice.registry,
                    reason = held.label(),
                    guidance = %notice.said,
                    "registry held back: none of its credentials is refreshed until the keeper's config says where its token requests may go"
                );
                self.report(StateChange::RegistryHeldBack {
                    registry_id: notice.registry.clone(),
                    registry: notice.name.clone(),
                    guidance: notice.said.clone(),
                })
                .await;
            }
        }
    }
}
