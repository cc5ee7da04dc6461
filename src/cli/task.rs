//! `switchyard task ID`: one task's state, why it waits, and its story, one line per event.

use std::io::Write;

use switchyard_protocol::{CoordinationSync, StatusQuery, StoryEntry, TaskWaitView, utc_time};

use super::{RunContext, write_json_line};

#[derive(clap::Args)]
pub(crate) struct TaskArgs {
    /// The task's id.
    id: String,
    /// The answer as one JSON line: {"task": state and why it waits, "story": [entries]}.
    #[arg(long)]
    json: bool,
}

/// What `--json` prints.
#[derive(serde::Serialize)]
struct TaskJson<'a> {
    task: Option<&'a TaskWaitView>,
    story: &'a [StoryEntry],
}

/// Asks the deployment at the configured NATS URL about one task and prints its story.
pub(crate) async fn run(
    args: TaskArgs,
    context: &RunContext<'_>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let status = ask(context, &args.id).await?;
    let task = status.tasks.iter().find(|t| t.task_id == args.id);
    if args.json {
        return write_json_line(
            out,
            &TaskJson {
                task,
                story: &status.story,
            },
        );
    }
    write_task(out, &args.id, task, &status.story)
}

/// One status query naming the task, without the agent table.
async fn ask(context: &RunContext<'_>, task_id: &str) -> anyhow::Result<CoordinationSync> {
    let query = StatusQuery {
        include_agents: false,
        task_id: Some(task_id.to_string()),
        ..StatusQuery::default()
    };
    super::ask_status(context, query).await
}

/// The task's state and why it waits, then its story, one event a line.
pub(super) fn write_task(
    out: &mut dyn Write,
    task_id: &str,
    task: Option<&TaskWaitView>,
    story: &[StoryEntry],
) -> anyhow::Result<()> {
    match task {
        Some(t) if t.detail.is_empty() => writeln!(out, "task {task_id}: {}", t.state)?,
        Some(t) => writeln!(out, "task {task_id}: {} ({})", t.state, t.detail)?,
        None => writeln!(out, "task {task_id}: unknown (or expired)")?,
    }
    write_story(out, story)
}

/// The story, one event a line (or that none was recorded).
pub(super) fn write_story(out: &mut dyn Write, story: &[StoryEntry]) -> anyhow::Result<()> {
    if story.is_empty() {
        writeln!(out, "no story recorded")?;
    }
    for entry in story {
        writeln!(out, "{}", story_line(entry))?;
    }
    Ok(())
}

/// `2026-12-03 10:15:42.250 UTC  granted           agent=a1 attempt=1 ...`
pub(super) fn story_line(entry: &StoryEntry) -> String {
    let details: Vec<String> = entry
        .details
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{}  {:<17} {}",
        utc_time(entry.at_ms),
        entry.event.as_str(),
        details.join(" ")
    )
    .trim_end()
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_protocol::StoryEvent;

    #[test]
    fn a_story_line_has_the_time_the_event_and_its_details() {
        let entry = StoryEntry {
            at_ms: 0,
            event: StoryEvent::Granted,
            details: [("agent", "a1"), ("attempt", "1"), ("scores", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(
            story_line(&entry),
            "1970-01-01 00:00:00.000 UTC  granted           agent=a1 attempt=1"
        );
    }
}
