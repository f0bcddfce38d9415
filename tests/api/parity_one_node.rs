//! The parity scenarios (tests/api/parity.rs) on one in-process node; tests/redis/parity_two_nodes.rs runs
//! the same bodies on two nodes sharing Redis.

use parley::clock::Clock;
use parley::config::Config;

use crate::helpers::{spawn_app_at, TestApp};
use crate::parity::{self, Desk, Hook, MONDAY_10, SATURDAY_10};

async fn one_node(start: u64, customise: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_at(Clock::manual(start), customise).await
}

fn desk_of(app: &TestApp) -> Desk<'_, TestApp> {
    Desk {
        visitors: app,
        agents: app,
        nodes: vec![app],
        clock: app.clock.clone(),
    }
}

#[tokio::test]
async fn the_first_response_clock_reads_the_desk_clock() {
    let app = one_node(MONDAY_10, parity::sla_desk).await;
    parity::the_first_response_clock_reads_the_desk_clock(&desk_of(&app)).await;
}

#[tokio::test]
async fn the_sla_check_interval_is_honoured() {
    let app = one_node(MONDAY_10, parity::hourly_sla_checks).await;
    parity::the_sla_check_interval_is_honoured(&desk_of(&app)).await;
}

#[tokio::test]
async fn a_reopen_window_longer_than_a_day_is_honoured() {
    let app = one_node(MONDAY_10, parity::three_day_reopen).await;
    parity::a_reopen_window_longer_than_a_day_is_honoured(&desk_of(&app)).await;
}

#[tokio::test]
async fn outside_hours_a_chat_is_offline_from_the_start() {
    let hook = Hook::start().await;
    let app = one_node(SATURDAY_10, |c| {
        parity::weekday_supervisors(c);
        c.webhooks = vec![hook.endpoint()];
    })
    .await;
    parity::outside_hours_a_chat_is_offline_from_the_start(&desk_of(&app), &hook).await;
}

#[tokio::test]
async fn notes_follow_the_transfer_outcome() {
    let app = one_node(MONDAY_10, |_| {}).await;
    parity::notes_follow_the_transfer_outcome(&desk_of(&app)).await;
}

#[tokio::test]
async fn the_queue_estimate_is_learnt() {
    let app = one_node(MONDAY_10, parity::one_chat_each).await;
    parity::the_queue_estimate_is_learnt(&desk_of(&app)).await;
}

#[tokio::test]
async fn a_transcript_has_what_the_store_lacks() {
    let app = one_node(MONDAY_10, parity::writes_an_hour_behind).await;
    parity::a_transcript_has_what_the_store_lacks(&desk_of(&app)).await;
}

#[tokio::test]
async fn a_returning_visitor_sees_no_internal_figures() {
    let app = one_node(MONDAY_10, |_| {}).await;
    parity::a_returning_visitor_sees_no_internal_figures(&desk_of(&app)).await;
}

#[tokio::test]
async fn a_reopened_unanswered_conversation_keeps_its_first_response_clock() {
    let app = one_node(MONDAY_10, parity::sla_desk).await;
    parity::a_reopened_unanswered_conversation_keeps_its_first_response_clock(&desk_of(&app)).await;
}
