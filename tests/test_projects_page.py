"""The Projects page through AppTest: deleting a project, naming a new one."""

from test_app import open_page, texts

from impartial.config import whole_cell_tasks
from impartial.project import create_project, list_projects


def test_a_project_is_deleted_only_after_its_name_is_typed(data_root):
    for name in ("keep", "scratch"):
        create_project(data_root, name, ["membrane", "nuclear"], whole_cell_tasks())
    app = open_page(None, project="scratch")
    app.selectbox(key="delete_project_name").set_value("scratch").run()
    delete = next(button for button in app.button if button.label == "Delete project")
    assert delete.disabled
    app.text_input(key="delete_project_confirm").input("scratch").run()
    next(button for button in app.button if button.label == "Delete project").click().run()
    assert not app.exception, app.exception
    assert [info.name for info in list_projects(data_root)] == ["keep"]
    assert len(list((data_root / "deleted").iterdir())) == 1
    assert "project" not in app.session_state  # the open project was the deleted one


def test_an_empty_project_name_gets_its_own_message(data_root):
    app = open_page(None)
    app.text_input[0].input("  ").run()
    next(button for button in app.button if button.label == "Create").click().run()
    assert any("give the project a name" in text for text in texts(app, "error"))
