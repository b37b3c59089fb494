//! Sidecar payloads as the reference sidecar sends them: a `StatsReport` carrying a JVB's
//! whole `/colibri/stats` (every key a current JVB publishes, about 2.7 KB of JSON).

use serde_json::{Map, Value, json};

/// Numeric keys of a current JVB's `/colibri/stats` (sidecar-protocol.md §7.2).
const JVB_NUMERIC_KEYS: &[&str] = &[
    "incoming_loss",
    "outgoing_loss",
    "overall_loss",
    "endpoints_with_high_outgoing_loss",
    "tcc_unmatched_feedback",
    "local_active_endpoints",
    "bit_rate_download",
    "bit_rate_upload",
    "packet_rate_download",
    "packet_rate_upload",
    "rtt_aggregate",
    "num_eps_oversending",
    "octo_conferences",
    "inactive_conferences",
    "p2p_conferences",
    "endpoints",
    "receive_only_endpoints",
    "inactive_endpoints",
    "octo_endpoints",
    "endpoints_sending_audio",
    "endpoints_sending_video",
    "octo_receive_bitrate",
    "octo_receive_packet_rate",
    "octo_send_bitrate",
    "octo_send_packet_rate",
    "endpoints_with_suspended_sources",
    "total_conferences_created",
    "total_conferences_completed",
    "total_conference_seconds",
    "total_participants",
    "total_visitors",
    "num_eps_no_msg_transport_after_delay",
    "total_relays",
    "num_relays_no_msg_transport_after_delay",
    "total_keyframes_received",
    "total_layering_changes_received",
    "total_video_stream_milliseconds_received",
    "visitors",
    "local_endpoints",
    "total_data_channel_messages_received",
    "total_data_channel_messages_sent",
    "total_colibri_web_socket_messages_received",
    "total_colibri_web_socket_messages_sent",
    "total_bytes_received",
    "endpoints_ice_failed",
    "dtls_failed_endpoints",
    "relays_ice_failed",
    "dtls_failed_relays",
    "total_bytes_sent",
    "total_packets_received",
    "total_packets_sent",
    "total_bytes_received_octo",
    "total_bytes_sent_octo",
    "total_packets_received_octo",
    "total_packets_sent_octo",
    "total_dominant_speaker_changes",
    "preemptive_kfr_sent",
    "preemptive_kfr_suppressed",
    "total_ice_failed",
    "total_ice_succeeded",
    "total_ice_succeeded_relayed",
    "average_participant_stress",
    "threads",
    "muc_clients_configured",
    "muc_clients_connected",
    "mucs_configured",
    "mucs_joined",
    "endpoints_with_spurious_remb",
    "endpoints_disconnected",
    "endpoints_reconnected",
];

/// A JVB's `/colibri/stats` at `stress`.
pub fn jvb_stats(stress: f64) -> Value {
    let mut stats = Map::new();
    for (i, key) in JVB_NUMERIC_KEYS.iter().enumerate() {
        stats.insert((*key).to_owned(), json!((i as u64 + 1) * 7919 % 100_003));
    }
    let participants = (stress * 120.0).round();
    for (key, value) in [
        ("stress_level", json!(stress)),
        ("participants", json!(participants)),
        ("conferences", json!((participants / 6.0).round())),
        ("largest_conference", json!(24)),
        ("graceful_shutdown", json!(false)),
        ("shutting_down", json!(false)),
        ("drain", json!(false)),
        ("healthy", json!(true)),
        ("version", json!("2.3.170-gd4e3a1b7")),
        ("region", json!("us-phoenix-1")),
        ("relay_id", json!("10.0.3.17")),
        ("current_timestamp", json!("2026-11-22 11:28:10.118")),
    ] {
        stats.insert(key.to_owned(), value);
    }
    Value::Object(stats)
}

/// The `InstanceDetails` of a JVB in `group`.
pub fn jvb_details(instance_id: &str, group: &str) -> Value {
    json!({"instanceId": instance_id, "instanceType": "JVB", "group": group,
        "cloud": "oracle", "region": "us-phoenix-1", "name": format!("{group}-{instance_id}"),
        "version": "2.3.170-gd4e3a1b7", "privateIp": "10.0.3.17", "publicIp": "129.146.12.7"})
}

/// A JVB `StatsReport` body, serialized, with the sidecar's `timestamp`.
pub fn jvb_status_body(instance_id: &str, group: &str, stress: f64, timestamp_ms: i64) -> Vec<u8> {
    let report = json!({"instance": jvb_details(instance_id, group), "stats": jvb_stats(stress),
        "timestamp": timestamp_ms, "shutdownStatus": false, "shutdownError": false,
        "reconfigureError": false, "reconfigureComplete": "", "statsError": false});
    serde_json::to_vec(&report).expect("JSON")
}

/// A group body for the benchmarks' check-ins: JVB, autoscale on, launch off (so the engine
/// runs its passes over the reported load and never calls a cloud).
pub fn bench_group(name: &str) -> Value {
    json!({
        "name": name, "type": "JVB", "region": "us-phoenix-1", "environment": "bench",
        "compartmentId": "", "instanceConfigurationId": "", "cloud": "local",
        "enableAutoScale": true, "enableLaunch": false, "gracePeriodTTLSec": 0,
        "protectedTTLSec": 600,
        "scalingOptions": {"minDesired": 1, "maxDesired": 100_000, "desiredCount": 1,
            "scaleUpQuantity": 1, "scaleDownQuantity": 1, "scaleUpThreshold": 0.7,
            "scaleDownThreshold": 0.3, "scalePeriod": 60, "scaleUpPeriodsCount": 2,
            "scaleDownPeriodsCount": 10}
    })
}
