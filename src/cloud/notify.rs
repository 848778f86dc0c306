//! Nova's notifications, as `lambda cloud` sends them when given a transport URL: the same
//! oslo.messaging v2 envelope, exchange (`nova`, a non-durable topic exchange, as oslo declares
//! it), topic queue (`versioned_notifications.info`, declared like oslo's notifier does so no
//! notification is unroutable), publisher (`nova-compute:<host>`) and versioned payloads
//! (`InstanceCreatePayload` 1.12 for `instance.create.end`, `InstanceActionPayload` 1.8 for
//! `instance.delete.end`) with the key fields of what the real Nova sends.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::ExchangeKind;
use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::state::{Flavor, Server};
use crate::events::broker::{Broker, BrokerError};

/// The exchange Nova notifies on.
pub const EXCHANGE: &str = "nova";
/// The versioned notifications' topic (with its priority).
pub const TOPIC: &str = "versioned_notifications.info";
/// The host Nova's services report: the publisher is `nova-compute:<HOST>`.
pub const HOST: &str = "lambda-cloud";

/// The versioned notification `event_type` of `payload`, wrapped as oslo.messaging v2 sends it.
pub fn envelope(event_type: &str, payload: Value, message_id: &str, now: DateTime<Utc>) -> Value {
    let message = json!({
        "message_id": message_id,
        "publisher_id": format!("nova-compute:{HOST}"),
        "event_type": event_type,
        "priority": "INFO",
        "payload": payload,
        "timestamp": now.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
    });
    json!({"oslo.version": "2.0", "oslo.message": message.to_string()})
}

fn object(name: &str, version: &str, data: Value) -> Value {
    json!({
        "nova_object.name": name,
        "nova_object.namespace": "nova",
        "nova_object.version": version,
        "nova_object.data": data,
    })
}

fn iso(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The versioned payload of `event_type` for `server` (`instance.create.end`: an
/// `InstanceCreatePayload`; others an `InstanceActionPayload`).
pub fn instance_payload(
    event_type: &str,
    server: &Server,
    flavor: Option<&Flavor>,
    now: DateTime<Utc>,
) -> Value {
    let deleted = event_type.starts_with("instance.delete");
    let flavor = flavor.map(|f| {
        object(
            "FlavorPayload",
            "1.4",
            json!({
                "flavorid": f.id, "name": f.name, "memory_mb": f.ram, "vcpus": f.vcpus,
                "root_gb": f.disk, "ephemeral_gb": 0, "swap": 0, "rxtx_factor": 1.0,
                "vcpu_weight": 0, "disabled": false, "is_public": true, "extra_specs": {},
                "projects": null, "description": null,
            }),
        )
    });
    let ips: Vec<Value> = match (&server.network, deleted) {
        (Some(net), false) => vec![object(
            "IpPayload",
            "1.0",
            json!({
                "label": net, "mac": server.mac, "meta": {}, "version": 4,
                "address": server.address, "port_uuid": null, "device_name": null,
            }),
        )],
        _ => vec![],
    };
    let mut data = json!({
        "uuid": server.id,
        "display_name": server.name,
        "display_description": null,
        "host_name": server.name,
        "host": HOST,
        "node": HOST,
        "instance_name": format!("instance-{}", &server.id[..server.id.len().min(8)]),
        "user_id": server.user_id,
        "tenant_id": server.project_id,
        "reservation_id": null,
        "request_id": null,
        "availability_zone": server.availability_zone,
        "flavor": flavor,
        "image_uuid": server.image_id,
        "key_name": server.key_name,
        "state": if deleted { "deleted" } else { "active" },
        "power_state": if deleted { "pending" } else { "running" },
        "task_state": null,
        "progress": 0,
        "ip_addresses": ips,
        "block_devices": [],
        "metadata": server.metadata,
        "locked": false,
        "locked_reason": null,
        "fault": null,
        "os_type": null,
        "architecture": null,
        "kernel_id": "",
        "ramdisk_id": "",
        "auto_disk_config": "MANUAL",
        "created_at": iso(server.created),
        "launched_at": iso(server.created),
        "updated_at": iso(now),
        "terminated_at": if deleted { Some(iso(now)) } else { None },
        "deleted_at": if deleted { Some(iso(now)) } else { None },
        "action_initiator_user": server.user_id,
        "action_initiator_project": server.project_id,
    });
    if !deleted && let Some(d) = data.as_object_mut() {
        d.insert("tags".into(), json!(server.tags));
        d.insert("keypairs".into(), json!([]));
        d.insert("trusted_image_certificates".into(), Value::Null);
    }
    let (name, version) = if event_type == "instance.create.end" {
        ("InstanceCreatePayload", "1.12")
    } else {
        ("InstanceActionPayload", "1.8")
    };
    object(name, version, data)
}

/// A lazily (re)connected notifier; a notification that cannot be sent is logged, never
/// fails the API call or the server's lifecycle (as with Nova).
pub struct Notifier {
    url: String,
    broker: Mutex<Option<Arc<Broker>>>,
}

impl Notifier {
    /// A notifier for the transport URL `url` (`amqp://…`); nothing connects until it is used.
    pub fn new(url: impl Into<String>) -> Notifier {
        Notifier {
            url: url.into(),
            broker: Mutex::new(None),
        }
    }

    async fn broker(&self) -> Result<Arc<Broker>, BrokerError> {
        let mut cur = self.broker.lock().await;
        if let Some(b) = cur.as_ref().filter(|b| b.is_connected()) {
            return Ok(b.clone());
        }
        let b = Arc::new(Broker::connect(&self.url).await?);
        // As oslo declares them: a non-durable topic exchange and the topic's queue.
        b.declare_exchange_with(
            EXCHANGE,
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
        )
        .await?;
        b.declare_queue_with(TOPIC, QueueDeclareOptions::default(), FieldTable::default())
            .await?;
        b.bind(TOPIC, EXCHANGE, TOPIC).await?;
        *cur = Some(b.clone());
        Ok(b)
    }

    /// Sends `event_type` about `server` (with confirm; logged on failure).
    pub async fn instance(&self, event_type: &str, server: &Server, flavor: Option<&Flavor>) {
        let now = Utc::now();
        let id = uuid::Uuid::new_v4().to_string();
        let body = envelope(
            event_type,
            instance_payload(event_type, server, flavor, now),
            &id,
            now,
        );
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into());
        let sent = match self.broker().await {
            Ok(b) => {
                b.publish(EXCHANGE, TOPIC, body.to_string().as_bytes(), properties)
                    .await
            }
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => tracing::info!(server = %server.id, event_type, "notification sent"),
            Err(e) => {
                tracing::warn!(server = %server.id, event_type, error = %e, "notification not sent")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::cloudevent::{AmqpMessage, CloudEvent, Data};

    fn server() -> Server {
        serde_json::from_value(json!({
            "id": "c3bd3f90-889e-4927-b190-3a8922e9c5a9", "name": "worker-1",
            "project_id": "p1", "user_id": "u1", "status": "ACTIVE", "flavor_id": "1",
            "image_id": "img-1", "key_name": null, "security_groups": [],
            "availability_zone": "nova", "metadata": {"lambda.pool": "default/workers"},
            "tags": [], "user_data": null, "network": "lambda-net", "index": 150,
            "address": "10.251.0.150", "mac": "fa:16:3e:00:00:96",
            "created": "2026-12-03T13:25:36Z", "updated": "2026-12-03T13:25:38Z",
            "fault": null, "user_data_done": true, "task_state": null
        }))
        .expect("server")
    }

    fn parse(v: &Value) -> CloudEvent {
        let body = v.to_string();
        CloudEvent::from_amqp(&AmqpMessage {
            headers: &[],
            content_type: Some("application/json"),
            message_id: None,
            body: body.as_bytes(),
        })
        .expect("an OpenStack notification")
    }

    /// The same fields where the real Nova's notification has them (its capture is the fixture).
    #[test]
    fn the_envelope_and_payload_have_the_real_nova_s_shape() {
        let real: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/nova-instance-create-end.json"
        ))
        .expect("fixture");
        let real = parse(&real);
        let flavor = Flavor {
            id: "1".into(),
            name: "m1.tiny".into(),
            vcpus: 1,
            ram: 512,
            disk: 1,
        };
        let now = Utc::now();
        let ours = envelope(
            "instance.create.end",
            instance_payload("instance.create.end", &server(), Some(&flavor), now),
            "m-1",
            now,
        );
        let ours = parse(&ours);
        assert_eq!(ours.type_, real.type_);
        assert_eq!(ours.source, "openstack/nova-compute:lambda-cloud");
        assert_eq!(ours.id, "m-1");
        assert!(ours.time.is_some());
        let (Some(Data::Json(a)), Some(Data::Json(b))) = (&ours.data, &real.data) else {
            panic!("json payloads")
        };
        for k in [
            "nova_object.name",
            "nova_object.namespace",
            "nova_object.version",
        ] {
            assert_eq!(a[k], b[k], "{k}");
        }
        let (a, b) = (&a["nova_object.data"], &b["nova_object.data"]);
        let keys = |v: &Value| -> std::collections::BTreeSet<String> {
            v.as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        let missing: Vec<_> = keys(b).difference(&keys(a)).cloned().collect();
        assert!(
            missing.is_empty(),
            "fields the real payload has and ours lacks: {missing:?}"
        );
        assert_eq!(a["uuid"], "c3bd3f90-889e-4927-b190-3a8922e9c5a9");
        assert_eq!(
            a["flavor"]["nova_object.data"]["memory_mb"],
            b["flavor"]["nova_object.data"]["memory_mb"]
        );
        assert_eq!(
            a["ip_addresses"][0]["nova_object.data"]["address"],
            "10.251.0.150"
        );
        assert_eq!(a["state"], "active");
    }

    #[test]
    fn a_deletion_is_an_action_payload_of_a_deleted_instance() {
        let now = Utc::now();
        let p = instance_payload("instance.delete.end", &server(), None, now);
        assert_eq!(p["nova_object.name"], "InstanceActionPayload");
        assert_eq!(p["nova_object.version"], "1.8");
        let d = &p["nova_object.data"];
        assert_eq!(d["state"], "deleted");
        assert_eq!(d["ip_addresses"], json!([]));
        assert!(d["deleted_at"].is_string());
        assert!(d.get("tags").is_none());
    }
}
