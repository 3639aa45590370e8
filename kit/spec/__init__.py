"""What users write, parsed and checked before anything runs: the manifest (`manifest`), output
and parameter contracts (`contracts`), notebooks' parameters cells (`notebooks`), scenario files
(`scenario`), the project and its kit.yaml (`project`), principals, roles and redaction (`policy`)."""
