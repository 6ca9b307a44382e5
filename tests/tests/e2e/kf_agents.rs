//! Agents by presence, end to end: a new conversation goes to an agent who is online in IM (from
//! the state callbacks, confirmed with `query_online_status` when they are stale or silent), stays
//! with that agent, and goes to any agent in turn when none is online.

use wxim_tests::BACKENDS;
use wxim_tests::harness::{Options, World};

use super::oa::{T0, conv, say};

const QUERY: &str = "/v4/openim/query_online_status";

async fn agent_of(w: &World, who: &str) -> String {
    conv(w, who).await.s("agent").unwrap_or("").to_owned()
}

#[tokio::test]
async fn a_new_conversation_goes_to_an_online_agent_and_stays_there() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        // The round would start with agent_alice; only agent_bob is in IM.
        assert_eq!(
            w.state_change("agent_bob", "Login", w.now() * 1000)
                .await
                .status,
            200
        );
        assert_eq!(
            w.state_change("agent_alice", "Logout", w.now() * 1000)
                .await
                .status,
            200
        );
        say(&w, "oN1", 1, "hello").await;
        say(&w, "oN2", 1, "hello").await;
        assert_eq!(agent_of(&w, "oN1").await, "agent_bob", "{b:?}");
        assert_eq!(agent_of(&w, "oN2").await, "agent_bob", "{b:?}");
        assert_eq!(w.im.count(QUERY), 0, "{b:?}: the callbacks told");
        // agent_bob leaves and agent_alice comes: his conversations stay his.
        w.advance(5);
        w.state_change("agent_bob", "Logout", w.now() * 1000).await;
        w.state_change("agent_alice", "Login", w.now() * 1000).await;
        say(&w, "oN1", 2, "still there?").await;
        assert_eq!(agent_of(&w, "oN1").await, "agent_bob", "{b:?}: sticky");
        say(&w, "oN3", 1, "hi").await;
        assert_eq!(agent_of(&w, "oN3").await, "agent_alice", "{b:?}");
    }
}

#[tokio::test]
async fn stale_presence_is_asked_of_im_and_with_nobody_online_the_round_goes_on() {
    for b in BACKENDS {
        let w = World::new(Options::new(b).at(T0)).await;
        // Logins long ago (web clients never report leaving): IM is asked.
        w.state_change("agent_alice", "Login", (T0 - 700) * 1000)
            .await;
        w.state_change("agent_bob", "Login", (T0 - 700) * 1000)
            .await;
        w.im.set_online("agent_bob", "Online");
        say(&w, "oS1", 1, "hello").await;
        assert_eq!(agent_of(&w, "oS1").await, "agent_bob", "{b:?}");
        assert_eq!(w.im.count(QUERY), 1, "{b:?}");
        // Nobody online: the follower still gets an agent, in turn.
        w.im.set_online("agent_bob", "Offline");
        say(&w, "oS2", 1, "hello").await;
        say(&w, "oS3", 1, "hello").await;
        let (a2, a3) = (agent_of(&w, "oS2").await, agent_of(&w, "oS3").await);
        assert!(!a2.is_empty() && !a3.is_empty(), "{b:?}");
        assert_ne!(a2, a3, "{b:?}: round robin");
        assert_eq!(w.outbox_of("forward").await.len(), 3, "{b:?}");
    }
}
