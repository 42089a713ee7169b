"""Display names of dataset references: registered names as they are, paths by their shortest distinct suffix."""

from unforget.reports.names import display_names


def test_registered_names_stay_as_they_are():
    refs = ["digits", "scenes-vqa?qtypes=colour", "easy-vqa?qtypes=shape,colour&n_test=5"]
    assert display_names(refs) == {r: r for r in refs}


def test_a_unique_last_component_is_the_label():
    assert display_names(["mnist-idx:/data/mnist", "imagefolder:/data/mini-imagenet/", "digits"]) == {
        "mnist-idx:/data/mnist": "mnist", "imagefolder:/data/mini-imagenet/": "mini-imagenet", "digits": "digits"}


def test_two_folders_with_one_last_name_get_their_shortest_distinct_suffix():
    assert display_names(["mnist-idx:/a/mnist", "mnist-idx:/b/mnist", "digits"]) == {
        "mnist-idx:/a/mnist": "a/mnist", "mnist-idx:/b/mnist": "b/mnist", "digits": "digits"}
    # only the clashing ones grow, each as far as it needs
    assert display_names(["imagefolder:/x/a/set", "imagefolder:/y/a/set", "imagefolder:/z/b/set",
                          "imagefolder:/z/other"]) == {
        "imagefolder:/x/a/set": "x/a/set", "imagefolder:/y/a/set": "y/a/set", "imagefolder:/z/b/set": "b/set",
        "imagefolder:/z/other": "other"}


def test_a_path_named_like_a_registered_set_is_told_apart_from_it():
    assert display_names(["digits", "imagefolder:/data/digits"]) == {
        "digits": "digits", "imagefolder:/data/digits": "data/digits"}


def test_query_options_stay_on_the_label():
    assert display_names(["mnist-idx:/a/mnist?n_test=5", "mnist-idx:/a/mnist?n_test=9"]) == {
        "mnist-idx:/a/mnist?n_test=5": "mnist?n_test=5", "mnist-idx:/a/mnist?n_test=9": "mnist?n_test=9"}


def test_yaml_files_show_their_stem_likewise():
    assert display_names(["sets/flowers.yaml", "other/flowers.yml", "/abs/cars.yaml"]) == {
        "sets/flowers.yaml": "sets/flowers", "other/flowers.yml": "other/flowers", "/abs/cars.yaml": "cars"}


def test_one_folder_under_two_formats_is_shown_in_full():
    refs = ["imagefolder:/data/x", "cifar:/data/x"]
    assert display_names(refs) == {r: r for r in refs}
    assert display_names(["flowers.yaml", "flowers"]) == {"flowers.yaml": "flowers.yaml", "flowers": "flowers"}


def test_repeated_references_and_empty_input():
    assert display_names([]) == {}
    assert display_names(["mnist-idx:/a/mnist", "mnist-idx:/a/mnist"]) == {"mnist-idx:/a/mnist": "mnist"}
