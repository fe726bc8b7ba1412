//! The WebSocket exec protocol up to the cell: the upgrade works through the listener, a
//! malformed first message is answered with an error frame carrying a problem, and the
//! server closes the socket after it.

mod common;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

async fn connect(
    server: &common::Server,
) -> tokio_tungstenite::WebSocketStream<tokio::net::UnixStream> {
    let stream = tokio::net::UnixStream::connect(&server.socket)
        .await
        .expect("connect");
    let (socket, response) =
        tokio_tungstenite::client_async("ws://cellos/v1/cells/hello/exec/ws", stream)
            .await
            .expect("WebSocket handshake");
    assert_eq!(response.status().as_u16(), 101);
    socket
}

/// The next text frame as JSON, then whether the server closed.
async fn next_frame(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>,
) -> serde_json::Value {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(text.as_str()).expect("a JSON frame")
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

async fn assert_closed(socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>) {
    match socket.next().await {
        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {}
        other => panic!("expected the server to close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_first_message_gets_an_error_frame_then_close() {
    let server = common::start(|_, _| {}).await;
    let mut socket = connect(&server).await;
    socket
        .send(Message::Text(r#"{"argv": 5}"#.into()))
        .await
        .expect("send");
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["type"], "error");
    assert_eq!(
        frame["problem"]["type"],
        "https://cellos.dev/problems/bad-request"
    );
    assert_closed(&mut socket).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_the_sessions_refuse_is_reported_as_a_problem_frame() {
    let server = common::start(|_, _| {}).await;
    let mut socket = connect(&server).await;
    socket
        .send(Message::Text(
            r#"{"argv":["/bin/sh"],"pty":{"rows":24,"cols":80},"stdin":true}"#.into(),
        ))
        .await
        .expect("send");
    let frame = next_frame(&mut socket).await;
    assert_eq!(frame["type"], "error");
    assert!(frame["problem"]["status"]
        .as_u64()
        .is_some_and(|s| s >= 400));
    assert_closed(&mut socket).await;
    drop(socket);
    server.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_get_of_the_websocket_route_is_a_bad_request() {
    let server = common::start(|_, _| {}).await;
    server
        .unix(common::get("/v1/cells/hello/exec/ws"))
        .await
        .problem(400, "bad-request");
}
