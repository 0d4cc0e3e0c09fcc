//! Push delivery against real receivers on loopback: a Web Push service that decrypts what we
//! send with its own subscription keys, FCM's OAuth and messages endpoints, an HTTP/2 APNs.

mod apns;
mod breaker;
mod fcm;
mod receiver;
mod web;
