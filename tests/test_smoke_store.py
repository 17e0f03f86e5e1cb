from llmobs.store import migrations


def test_template_has_schema(admin_conn):
    st = migrations.status(admin_conn)
    assert st.pending == []
    assert st.schema_version >= 1
